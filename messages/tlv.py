"""Tag-length-value records for medswitch's private fields (1-byte tag, 1-byte length).

A layout is a tuple of :class:`Tag`; a record dataclass's attributes are named by it.
Encoding writes tags in ascending order and omits absent (``None``) values, so the same
values always give the same bytes. A layout is indexed once (:func:`index_layout` to decode,
:func:`encoders` to encode) so that a tag costs no dispatch on its kind per message.

>>> from types import SimpleNamespace
>>> layout = (Tag(0x01, "serial", TagKind.BYTES, 2), Tag(0x02, "count", TagKind.UINT, 2))
>>> encode_tlv(encoders(layout), SimpleNamespace(serial=b"\\xab\\xcd", count=7)).hex()
'0102abcd02020007'
>>> decode_tlv(index_layout(layout), bytes.fromhex("0102abcd02020007"), "58")
{'serial': b'\\xab\\xcd', 'count': 7}
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from messages.errors import CodecError
from messages.straight import defined


class TagKind(enum.Enum):
    UINT = "uint"  # big-endian unsigned integer of exactly `size` bytes
    BYTES = "bytes"  # exactly `size` bytes, or up to 255 when size is 0
    TEXT = "text"  # UTF-8, up to 255 bytes
    BCD = "bcd"  # `size` bytes of packed BCD, as a digit string
    CHAINED = "chained"  # bytes of any length, as consecutive elements of the tag, 255 at most
    # each (all but the last exactly 255): the value is their concatenation


@dataclass(frozen=True, slots=True)
class Tag:
    tag: int
    name: str
    kind: TagKind
    size: int = 0  # 0: variable, up to 255 bytes


# How encode_tlv writes a value: an integer of a fixed 1-255 bytes (to_bytes gives exactly that
# many or raises, so its length needs no check), bytes, text, BCD digits, any other integer.
_PUT_UINT, _PUT_RAW, _PUT_TEXT, _PUT_BCD, _PUT_INT, _PUT_CHAINED = 0, 1, 2, 3, 4, 5

EncodePlan = tuple[tuple[str, int, int, int, bytes], ...]  # (name, tag, size, how, tag+size)


def encoders(layout: tuple[Tag, ...]) -> EncodePlan:
    """(name, tag, size, how to write it, its tag and length bytes) of each tag in layout
    order, for :func:`encode_tlv`."""
    plan = []
    for t in layout:
        if t.kind is TagKind.UINT:
            how = _PUT_UINT if 0 < t.size <= 255 else _PUT_INT
        else:
            how = {TagKind.BYTES: _PUT_RAW, TagKind.TEXT: _PUT_TEXT, TagKind.BCD: _PUT_BCD,
                   TagKind.CHAINED: _PUT_CHAINED}[t.kind]  # fmt: skip
        plan.append((t.name, t.tag, t.size, how, bytes((t.tag, t.size & 0xFF))))
    return tuple(plan)


def encode_tlv(plan: EncodePlan, record: object) -> bytes:
    """``record``'s attributes named by the layout, its ``None`` ones left out."""
    out = bytearray()
    for name, tag, fixed, how, head in plan:
        value = getattr(record, name)
        if value is None:
            continue
        if how == _PUT_UINT:
            out += head
            out += int(value).to_bytes(fixed, "big")
            continue
        if how == _PUT_CHAINED:
            raw = bytes(value)
            for start in range(0, len(raw) or 1, 255):  # an empty value: one empty element
                chunk = raw[start : start + 255]
                out += bytes((tag, len(chunk))) + chunk
            continue
        if how == _PUT_RAW:
            raw = bytes(value)
        elif how == _PUT_TEXT:
            raw = str(value).encode("utf-8")
        elif how == _PUT_BCD:
            raw = bytes.fromhex(value)
        else:
            raw = int(value).to_bytes(fixed, "big")
        size = len(raw)
        if (fixed and size != fixed) or size > 255:
            raise CodecError(f"private tag {tag:02X} ({name}) has a wrong length")
        out.append(tag)
        out.append(size)
        out += raw
    return bytes(out)


# How decode_tlv reads a tag's value, by its kind: an int code per tag instead of a decoder
# call, so that the common kinds cost no Python call (a 1-byte integer is the byte itself).
_RAW, _UINT, _UINT1, _TEXT, _BCD, _CHAINED = 0, 1, 2, 3, 4, 5

TagTable = tuple[tuple[str, int, int] | None, ...]  # (name, size, how) by tag number 0-255


def index_layout(layout: tuple[Tag, ...]) -> TagTable:
    """(name, size, how to read it) of each tag, indexed by its number (``None``: no such tag),
    for :func:`decode_tlv`."""
    table: list[tuple[str, int, int] | None] = [None] * 256
    for t in layout:
        if t.kind is TagKind.UINT:
            how = _UINT1 if t.size == 1 else _UINT
        else:
            how = {TagKind.BYTES: _RAW, TagKind.TEXT: _TEXT, TagKind.BCD: _BCD,
                   TagKind.CHAINED: _CHAINED}[t.kind]  # fmt: skip
        table[t.tag] = (t.name, t.size, how)
    return tuple(table)


def decode_tlv(by_tag: TagTable, data: bytes, field: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    index = 0
    size = len(data)
    chain_end = -1  # where a chained element of 255 bytes ended: its tag may continue there
    while index < size:
        if index + 2 > size:
            raise CodecError("truncated private tag", field=field, offset=index)
        tag = data[index]
        entry = by_tag[tag]
        if entry is None:
            raise CodecError(f"unknown private tag {tag:02X}", field=field, offset=index)
        name, fixed, how = entry
        length = data[index + 1]
        end = index + 2 + length
        if end > size or (fixed and length != fixed):
            raise CodecError(f"private tag {tag:02X} has a wrong length", field=field, offset=index)
        if name in values:
            if how != _CHAINED or index != chain_end:
                raise CodecError(f"private tag {tag:02X} repeated", field=field, offset=index)
            values[name] += data[index + 2 : end]
            chain_end = end if length == 255 else -1
            index = end
            continue
        if how == _UINT1:
            values[name] = data[index + 2]
        elif how == _RAW:
            values[name] = data[index + 2 : end]
        elif how == _CHAINED:
            values[name] = data[index + 2 : end]
            chain_end = end if length == 255 else -1
        elif how == _UINT:
            values[name] = int.from_bytes(data[index + 2 : end])
        else:
            raw = data[index + 2 : end]
            try:
                values[name] = raw.decode("utf-8") if how == _TEXT else _decode_bcd(raw)
            except ValueError:
                raise CodecError(
                    f"private tag {tag:02X} is malformed", field=field, offset=index
                ) from None
        index = end
    return values


def _decode_bcd(raw: bytes) -> str:
    digits = raw.hex()
    if not digits.isdigit():
        raise ValueError("not BCD")
    return digits


# -- a layout's straight-line code ------------------------------------------------------------
# The loops above, written out per layout (as `messages.straight` does for the codec's fields):
# generated from the layout's tag numbers, sizes and attribute names only, never from a message.

TlvReader = Callable[[bytes], "dict[str, Any] | None"]
TlvWriter = Callable[[object], bytes]

# How a fast read turns a tag's bytes ``d`` into its value, by its kind (as decode_tlv does).
_FAST_READ = {
    _RAW: "d",
    _CHAINED: "d",
    _UINT: "int.from_bytes(d)",
    _TEXT: 'd.decode("utf-8")',
    _BCD: "_decode_bcd(d)",
}


def tlv_reader(layout: tuple[Tag, ...]) -> TlvReader:
    """:func:`decode_tlv` of ``layout``'s tags when they come in layout order, each once (as
    :func:`encode_tlv` writes them), as a function of its own: a tag costs an int compared
    (the tag byte is read once per element), where the loop looks it up, unpacks its entry
    and dispatches on its kind (half a private field's decoding). Anything else — tags out of
    order or repeated, a chained tag's second element, an unknown tag, a wrong length, a
    malformed value — returns ``None``, and the loop reads the record (raising what it
    raises)."""
    table = index_layout(layout)
    lines = ["def read(data):", "    values = {}", "    at = 0", "    size = len(data)"]
    lines.append("    t = data[0] if size else -1")  # the tag at ``at`` (-1: none left)
    for tag in sorted(t.tag for t in layout):
        entry = table[tag]
        assert entry is not None
        name, fixed, how = entry
        if not name.isidentifier():
            raise ValueError(f"tag {tag:02X}'s name {name!r} is not an identifier")
        lines += [
            f"    if t == {tag}:",
            "        if at + 2 > size: return None",
        ]
        if how == _UINT1:  # one byte: the value is the byte itself
            lines += [
                "        end = at + 3",
                "        if end > size or data[at + 1] != 1: return None",
                f"        values[{name!r}] = data[at + 2]",
            ]
        else:
            lines.append("        end = at + 2 + data[at + 1]")
            if fixed:
                lines.append(f"        if end > size or end - at != {fixed + 2}: return None")
            else:
                lines.append("        if end > size: return None")
            lines.append("        d = data[at + 2 : end]")
            if how in (_TEXT, _BCD):
                lines += [
                    "        try:",
                    f"            values[{name!r}] = {_FAST_READ[how]}",
                    "        except ValueError:",
                    "            return None",
                ]
            else:
                lines.append(f"        values[{name!r}] = {_FAST_READ[how]}")
        lines += ["        at = end", "        t = data[at] if at < size else -1"]
    lines += ["    if at != size: return None", "    return values"]
    namespace: dict[str, Any] = {"_decode_bcd": _decode_bcd}
    reader: TlvReader = defined(lines, namespace, "<tlv reader>")
    return reader


def tlv_writer(layout: tuple[Tag, ...]) -> TlvWriter:
    """:func:`encode_tlv` of ``layout``'s plan as a function of its own: the same writes, checks
    and errors in the same order, without the loop's per-tag unpacking and dispatch."""
    lines = ["def write(record):", "    out = bytearray()"]
    namespace: dict[str, Any] = {"CodecError": CodecError}
    for name, tag, fixed, how, head in encoders(layout):
        if not name.isidentifier():
            raise ValueError(f"tag {tag:02X}'s name {name!r} is not an identifier")
        namespace[f"h{tag}"] = head
        lines += [f"    v = record.{name}", "    if v is not None:"]
        if how == _PUT_UINT:
            lines += [f"        out += h{tag}", f'        out += int(v).to_bytes({fixed}, "big")']
            continue
        if how == _PUT_CHAINED:
            lines += [
                "        raw = bytes(v)",
                "        for start in range(0, len(raw) or 1, 255):",
                "            chunk = raw[start : start + 255]",
                f"            out += bytes(({tag}, len(chunk))) + chunk",
            ]
            continue
        lines.append(
            "        raw = "
            + {
                _PUT_RAW: "bytes(v)",
                _PUT_TEXT: 'str(v).encode("utf-8")',
                _PUT_BCD: "bytes.fromhex(v)",
                _PUT_INT: f'int(v).to_bytes({fixed}, "big")',
            }[how]
        )
        lines.append("        size = len(raw)")
        wrong = f"({name}) has a wrong length"
        test = f"size != {fixed} or size > 255" if fixed else "size > 255"
        lines += [
            f"        if {test}:",
            f'            raise CodecError("private tag {tag:02X} {wrong}")',
            f"        out.append({tag})",
            "        out.append(size)",
            "        out += raw",
        ]
    lines.append("    return bytes(out)")
    writer: TlvWriter = defined(lines, namespace, "<tlv writer>")
    return writer

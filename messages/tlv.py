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
from dataclasses import dataclass
from typing import Any

from messages.errors import CodecError


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

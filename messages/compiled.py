"""The codec's compiled fast path: a decoder and an encoder specialised to one interface.

Built once per :class:`~messages.codec.Codec` from the very pyiso8583 spec dict its reference
path runs, they know for every field number what to do (fixed byte count, or the length
prefix's raw bytes mapped to the byte count; packed BCD digits with their pad nibble, ASCII,
binary) and which bitmap bit it owns, so a message costs a slice, a table look-up and a
conversion per field instead of pyiso8583's generic walk (a 64-bit loop over the bitmap, spec
dicts read per field, set operations over all field numbers). A spec entry outside the subset
of pyiso8583 the interfaces use (another pad, an ASCII bitmap, a header inside the spec) is
simply never taken fast.

They accept only what they were compiled for and answer ``None`` for anything else — a field the
interface does not define, a length out of range or not in canonical form, a short or over-long
payload, a non-digit where digits are required, a pad nibble that is not 0, a value of the wrong
type, a secondary bitmap on a 64-field interface, a third bitmap, any exception — and the codec
then takes its pyiso8583 path, which gives the result or the
:class:`~messages.errors.CodecError` it always gave. Whatever they return, that path returns
too: ``tests/messages/test_compiled.py`` holds them to it, property by property.

>>> from messages.codec import Codec
>>> from messages.spec_terminal import TERMINAL
>>> codec = Codec(TERMINAL)
>>> payload = bytes.fromhex("6000030000603210320072" "0800" "0020000000800010" "000001"
...                         "504F533030303031" "0011000000010040")
>>> codec.fast_decode(payload).fields
{11: '000001', 41: 'POS00001', 60: '00000001004'}
>>> codec.fast_decode(payload[:-1]) is None  # field 60 cut short: the reference path's case
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from messages.message import Message
from messages.straight import (
    BCD,
    BCD_LEAD,
    BCD_TRAIL,
    BINARY,
    BITMAP_BYTES,
    NIBBLES,
    NIBBLES_LEAD,
    NIBBLES_TRAIL,
    TEXT,
    TEXT_DIGITS,
    EncodeStep,
    FieldsReader,
    FieldsWriter,
    fields_reader,
    fields_writer,
)

_LEAD, _TRAIL = {BCD: BCD_LEAD, NIBBLES: NIBBLES_LEAD}, {BCD: BCD_TRAIL, NIBBLES: NIBBLES_TRAIL}

TPDU_BYTES = 5  # of the bytes before the MTI; the header is the rest
_CACHED_BITMAPS_MAX = 256  # distinct bitmaps whose field plans are kept; others planned per call
_PRIMARY_MAX = (1 << 64) - 1  # a larger bitmap key holds a secondary bitmap

Decoder = Callable[[bytes], "Message | None"]
Encoder = Callable[["Message"], "bytes | None"]
Spec = Mapping[str, Mapping[str, Any]]


class _Field:
    """What one pyiso8583 field spec asks for, in the subset of pyiso8583 the codec uses."""

    __slots__ = ("form", "max_len", "nibbles", "odd_form", "prefix_width", "prefixes")

    def __init__(self, spec: Mapping[str, Any], number: int, digits: bool, binary: bool) -> None:
        """``ValueError`` for what the fast path leaves to pyiso8583 (the field never fast)."""
        data_enc, len_enc = spec["data_enc"], spec["len_enc"]
        self.max_len: int = spec["max_len"]
        self.prefix_width: int = spec["len_type"]
        self.nibbles = spec.get("len_count", "bytes") == "nibbles"
        if binary and data_enc == "b" and not self.nibbles:
            self.form = BINARY
        elif data_enc == "ascii" and not binary and not self.nibbles:
            self.form = TEXT_DIGITS if digits else TEXT
        elif data_enc == "b" and not binary:
            self.form = BCD if digits else NIBBLES
        else:
            raise ValueError(f"field {number}: no fast form")
        # pyiso8583 strips and adds the left pad if there is one, else the right pad.
        left, right = spec.get("left_pad", "")[:1], spec.get("right_pad", "")[:1]
        self.odd_form: int | None = None  # the form of an odd nibble count: None, declined
        if self.nibbles and (left or right) == "0" and not (left and right):
            self.odd_form = (_LEAD if left else _TRAIL)[self.form]
        self.prefixes: tuple[bytes | None, ...] = ()
        if self.prefix_width:
            self.prefixes = tuple(self._prefix(len_enc, n) for n in range(self.max_len + 1))

    def _prefix(self, len_enc: str, count: int) -> bytes | None:
        """The length prefix pyiso8583 writes for ``count``; None where it refuses to."""
        width = self.prefix_width
        if len_enc == "bcd":
            digits = f"{count:0{width * 2}d}"
            return bytes.fromhex(digits) if len(digits) == width * 2 else None
        if len_enc == "ascii":
            digits = f"{count:0{width}d}"
            return digits.encode("ascii") if len(digits) == width else None
        if len_enc == "b":
            return count.to_bytes(width, "big") if count < 256**width else None
        raise ValueError(f"length encoding {len_enc!r}: no fast form")

    def shape(self, count: int) -> tuple[int, int] | None:
        """(bytes on the wire, decode form) of a value of ``count``; None: declined."""
        if not self.nibbles:
            return count, self.form
        if count & 1:
            return None if self.odd_form is None else ((count + 1) // 2, self.odd_form)
        return count // 2, self.form


def _decode_step(field: _Field, number: int) -> tuple[int, int, Any] | None:
    """(number, prefix width, plan): the plan is (bytes, form) for a fixed field, else a dict
    from each canonical length prefix 0..max to the (bytes, form) of the data after it (an
    empty value is "" or b"" as pyiso8583 gives it, and an empty numeric no number)."""
    if not field.prefix_width:
        shape = field.shape(field.max_len)
        return None if shape is None else (number, 0, shape)
    table = {}
    for count, prefix in enumerate(field.prefixes):
        shape = field.shape(count)
        if prefix is not None and shape is not None:
            table[prefix] = shape
    return number, field.prefix_width, table


def _fields(spec: Spec, digits: frozenset[int], binary: frozenset[int]) -> dict[int, _Field]:
    """The spec's fields the fast path can take, by number (2-128: no third bitmap)."""
    fields = {}
    for key, field_spec in spec.items():
        if not (key.isascii() and key.isdigit()) or not 2 <= int(key) <= 128:
            continue  # header, MTI, bitmaps
        number = int(key)
        try:
            fields[number] = _Field(field_spec, number, number in digits, number in binary)
        except ValueError:
            continue
    return fields


def _fast_envelope(spec: Spec) -> str | None:
    """The MTI's encoding ("b" or "ascii") if header and bitmaps are what the fast path
    handles (no header in the spec, binary bitmaps), else None: no message fast."""
    if spec["h"]["max_len"] or spec["p"]["data_enc"] != "b" or spec["1"]["data_enc"] != "b":
        return None
    mti_enc: str = spec["t"]["data_enc"]
    return mti_enc if mti_enc in ("b", "ascii") else None


def compile_decoder(
    spec: Spec,
    *,
    prefix_bytes: int,
    secondary_bitmap: bool,
    digits: frozenset[int],
    binary: frozenset[int],
    make: Callable[..., Message],
) -> Decoder:
    """A decoder of payloads (after the frame length: ``prefix_bytes`` before the MTI, then what
    the pyiso8583 ``spec`` describes) into ``make(mti, fields[, tpdu, header])``, or ``None``
    where the reference path must decide. ``digits`` are the fields checked to be digits,
    ``binary`` those given as bytes."""
    prefix = prefix_bytes
    mti_enc = _fast_envelope(spec)
    if mti_enc is None:
        return lambda payload: None
    bcd = mti_enc == "b"
    bitmap_at = prefix + (2 if bcd else 4)
    fields_at = bitmap_at + BITMAP_BYTES
    secondary = secondary_bitmap
    steps = {}
    for number, field in _fields(spec, digits, binary).items():
        step = _decode_step(field, number)
        if step is not None:
            steps[number] = step
    numbers = sorted(steps)
    primary_defined = sum(1 << (64 - n) for n in numbers if n <= 64)
    # With a secondary bitmap the key is primary << 64 | secondary: field n is bit 128 - n.
    wide_defined = sum(1 << (128 - n) for n in numbers) | 1 << 127
    plans: dict[int, tuple[tuple[int, int, Any], ...]] = {}
    readers: dict[int, FieldsReader] = {}  # the kept plans, each as straight-line code

    def plan_of(key: int, wide: bool) -> tuple[tuple[int, int, Any], ...] | None:
        width = 128 if wide else 64
        if key & ~(wide_defined if wide else primary_defined):
            return None  # a field the interface does not define, or not fast
        plan = tuple(steps[n] for n in numbers if n <= width and key >> (width - n) & 1)
        if len(plans) < _CACHED_BITMAPS_MAX:
            plans[key] = plan
            if plan:
                readers[key] = fields_reader(plan)
        return plan

    def decode(payload: bytes) -> Message | None:
        if type(payload) is not bytes:
            return None
        try:
            size = len(payload)
            if size < fields_at:
                return None
            raw_mti = payload[prefix:bitmap_at]
            mti = raw_mti.hex().upper() if bcd else raw_mti.decode("ascii")
            key = int.from_bytes(payload[bitmap_at:fields_at], "big")
            at = fields_at
            if key >> 63:  # a secondary bitmap
                if not secondary or size < at + BITMAP_BYTES:
                    return None
                second = int.from_bytes(payload[at : at + BITMAP_BYTES], "big")
                if second >> 63:  # a third bitmap
                    return None
                key = key << 64 | second
                at += BITMAP_BYTES
            reader = readers.get(key)
            if reader is not None:  # a kept bitmap: its fields read by its own code
                read = reader(payload, at, size)
                if read is None:
                    return None
                if prefix:
                    return make(mti, read, payload[:TPDU_BYTES], payload[TPDU_BYTES:prefix])
                return make(mti, read)
            plan = plans.get(key) or plan_of(key, key > _PRIMARY_MAX)
            if not plan:
                return None
            fields: dict[int, str | bytes] = {}
            for number, width, table in plan:
                if width:
                    count, form = table[payload[at : at + width]]
                    at += width
                else:
                    count, form = table
                end = at + count
                if end > size:
                    return None
                data = payload[at:end]
                at = end
                if form == BINARY:
                    fields[number] = data
                elif form == BCD:
                    value = data.hex()
                    if not value.isdigit():
                        return None
                    fields[number] = value
                elif form == TEXT:
                    fields[number] = data.decode("ascii")
                elif form == TEXT_DIGITS:
                    if not data.isdigit():
                        return None
                    fields[number] = data.decode("ascii")
                elif form == BCD_LEAD:
                    value = data.hex()
                    if value[0] != "0" or not value.isdigit():
                        return None
                    fields[number] = value[1:]
                elif form == BCD_TRAIL:
                    value = data.hex()
                    if value[-1] != "0" or not value.isdigit():
                        return None
                    fields[number] = value[:-1]
                else:
                    value = data.hex().upper()
                    if form == NIBBLES_LEAD:
                        if value[0] != "0":
                            return None
                        value = value[1:]
                    elif form == NIBBLES_TRAIL:
                        if value[-1] != "0":
                            return None
                        value = value[:-1]
                    fields[number] = value
            if at != size:
                return None
            if prefix:
                return make(mti, fields, payload[:TPDU_BYTES], payload[TPDU_BYTES:prefix])
            return make(mti, fields)
        except Exception:  # anything irregular is the reference path's to judge
            return None

    return decode


def compile_encoder(
    spec: Spec,
    *,
    prefix_bytes: int,
    secondary_bitmap: bool,
    digits: frozenset[int],
    binary: frozenset[int],
) -> Encoder:
    """An encoder of messages into payloads (without the frame length), or ``None`` where the
    reference path must decide; arguments as for :func:`compile_decoder`."""
    prefix = prefix_bytes
    mti_enc = _fast_envelope(spec)
    if mti_enc is None:
        return lambda message: None
    bcd = mti_enc == "b"
    fields = _fields(spec, digits, binary)
    if not secondary_bitmap:
        fields = {n: f for n, f in fields.items() if n <= 64}
    wide = any(n > 64 for n in fields)  # a secondary bitmap when a field above 64 is there
    width = 128 if wide else 64
    # (bitmap bit, form, pad of an odd nibble count ("": declined; None: counted in bytes),
    # fixed count or -1, length prefixes by count)
    steps: dict[int, EncodeStep] = {
        n: (
            1 << (width - n),
            f.form,
            (("L" if f.odd_form in (BCD_LEAD, NIBBLES_LEAD) else "R") if f.odd_form else "")
            if f.nibbles
            else None,
            -1 if f.prefix_width else f.max_len,
            f.prefixes,
        )
        for n, f in fields.items()
    }
    low_half = (1 << 64) - 1
    fromhex = bytes.fromhex  # skips whitespace, which pyiso8583's a2b_hex refuses: not given
    writers: dict[tuple[int, ...], FieldsWriter] = {}  # by the fields' numbers, as given

    def encode(message: Message) -> bytes | None:
        try:
            mti = message.mti
            if bcd:
                if type(mti) is not str or not mti.isalnum():
                    return None
                raw_mti = fromhex(mti)
            else:
                raw_mti = mti.encode("ascii")
            if len(raw_mti) != (2 if bcd else 4):
                return None
            fields = message.fields
            if prefix:
                tpdu, header = message.tpdu, message.header
                if len(tpdu) + len(header) != prefix:
                    return None
                parts = [tpdu, header, raw_mti, b""]
            else:
                parts = [raw_mti, b""]
            given = tuple(fields)
            writer = writers.get(given)
            if writer is None and len(writers) < _CACHED_BITMAPS_MAX:
                writer = fields_writer(given, steps, wide)
                if writer is not None:
                    writers[given] = writer
            if writer is not None:  # a kept field set: its fields written by its own code
                raw = writer(fields, parts)
                if raw is None:
                    return None
                parts[3 if prefix else 1] = raw
                return b"".join(parts)
            bitmap = 0
            for number in sorted(fields):
                bit, form, pad, fixed, prefixes = steps[number]
                value = fields[number]
                if form == BINARY:
                    if type(value) is not bytes:
                        return None
                    data, count = value, len(value)
                elif type(value) is not str:
                    return None
                elif form == TEXT:
                    data = value.encode("ascii")
                    count = len(data)
                elif form == TEXT_DIGITS:
                    if not value.isdigit():
                        return None
                    data = value.encode("ascii")
                    count = len(data)
                else:  # packed nibbles, BCD digits or hex
                    if form == BCD:
                        if not value.isdigit():
                            return None
                    elif value and not value.isalnum():
                        return None
                    if pad is None:  # counted in bytes
                        data = fromhex(value)
                        count = len(data)
                    else:  # counted in nibbles: an odd count takes a pad nibble
                        count = len(value)
                        if count & 1:
                            if not pad:
                                return None
                            value = "0" + value if pad == "L" else value + "0"
                        data = fromhex(value)
                if fixed >= 0:
                    if count != fixed:
                        return None
                    parts.append(data)
                else:
                    length = prefixes[count]  # IndexError above the maximum: declined
                    if length is None:
                        return None
                    parts.append(length)
                    parts.append(data)
                bitmap |= bit
            if not wide:
                raw_bitmap = bitmap.to_bytes(BITMAP_BYTES, "big")
            elif bitmap & low_half:
                raw_bitmap = (bitmap | 1 << 127).to_bytes(2 * BITMAP_BYTES, "big")
            else:
                raw_bitmap = (bitmap >> 64).to_bytes(BITMAP_BYTES, "big")
            parts[3 if prefix else 1] = raw_bitmap
            return b"".join(parts)
        except Exception:  # anything irregular is the reference path's to judge
            return None

    return encode

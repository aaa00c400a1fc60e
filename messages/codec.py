"""The ISO 8583 codec: bytes ↔ :class:`Message`, a compiled fast path over pyiso8583.

A :class:`Message` holds typed field values: ``str`` for numeric and text fields (numerics are
checked to be digits), ``bytes`` for binary fields. The codec compiles its interface's spec once,
never mutates what it is given, and raises only :class:`~messages.errors.CodecError`, which names
the field and byte offset and never carries field data.

pyiso8583 remains the codec of record. The interface's spec is compiled into its spec dict
(:meth:`~messages.fieldspec.InterfaceSpec.compile`), and :meth:`Codec.reference_decode` and
:meth:`Codec.reference_encode` run it as they always did: they define what a payload means,
which bytes a message becomes and every error (reason, field, offset, envelope). The tests hold
the fast path to them.

The fast path (:mod:`messages.compiled`, :attr:`Codec.fast_decode` and
:attr:`Codec.fast_encode`) exists because pyiso8583's generic walk was ~40 us of the daemon's
~290 us of CPU per exchange: through this codec ~24 us to decode the settlement 0200 and ~27 us
to encode its 0210 reply, against ~4 us and ~3.5 us compiled (same-process timings, 2-core
machine). It takes the messages it was compiled for and declines (``None``) anything irregular;
:meth:`Codec.decode` and :meth:`Codec.encode` then run the reference path, so a malformed
message gets exactly the result or the error it always got.

>>> from messages.spec_terminal import TERMINAL
>>> codec = Codec(TERMINAL)
>>> message = Message("0800", {11: "000001", 41: "POS00001", 60: "00000001004"},
...                   tpdu=bytes.fromhex("6000030000"), header=bytes.fromhex("603210320072"))
>>> codec.decode(codec.encode(message)) == message
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import iso8583

from messages.compiled import TPDU_BYTES, Decoder, Encoder, compile_decoder, compile_encoder
from messages.errors import CodecError
from messages.fieldspec import Encoding, InterfaceSpec, Kind
from messages.message import FieldValue as FieldValue
from messages.message import Message as Message
from messages.message import message

_TEXT, _DIGITS, _BINARY, _HEX = 0, 1, 2, 3  # how decode treats each field's value
_INCOMPLETE = re.compile(r"is (\d+) (?:bytes|nibbles)(?: wide)?, expecting (\d+)$")


@dataclass(frozen=True, slots=True)
class Codec:
    """Encoder and decoder for one interface. Build one per interface and share it.

    The bytes before the MTI (TPDU and header) are sliced and joined here, not by pyiso8583: they
    are plain bytes, and one pyiso8583 field less is ~1 us less per message either way."""

    interface: InterfaceSpec
    _spec: dict[str, Any] = field(init=False, repr=False, compare=False)
    _digits: frozenset[int] = field(init=False, repr=False, compare=False)
    _decode_plan: dict[str, tuple[int, int]] = field(init=False, repr=False, compare=False)
    _encode_plan: dict[int, tuple[str, int]] = field(init=False, repr=False, compare=False)
    fast_decode: Decoder = field(init=False, repr=False, compare=False)
    fast_encode: Encoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = self.interface.fields
        object.__setattr__(self, "_spec", self.interface.compile(prefix=False))
        digits = (Kind.N,) if self.interface.encoding is Encoding.BCD else (Kind.N, Kind.Z)
        object.__setattr__(
            self, "_digits", frozenset(n for n, f in fields.items() if f.kind in digits)
        )
        hex_fields = self.interface.hex_fields
        kinds = {
            n: (_HEX if n in hex_fields else _BINARY)
            if f.kind is Kind.B
            else _DIGITS
            if f.kind in digits
            else _TEXT
            for n, f in fields.items()
        }
        object.__setattr__(self, "_decode_plan", {str(n): (n, k) for n, k in kinds.items()})
        object.__setattr__(self, "_encode_plan", {n: (str(n), k) for n, k in kinds.items()})
        layout: dict[str, Any] = {
            "prefix_bytes": self.interface.prefix_bytes,
            "secondary_bitmap": self.interface.secondary_bitmap,
            "digits": self._digits,
            # hex fields too: the fast path has no form for them, so it declines them
            "binary": frozenset(n for n, k in kinds.items() if k in (_BINARY, _HEX)),
        }
        fast_decode = compile_decoder(self._spec, make=message, **layout)
        object.__setattr__(self, "fast_decode", fast_decode)
        object.__setattr__(self, "fast_encode", compile_encoder(self._spec, **layout))

    @property
    def prefix_bytes(self) -> int:
        return self.interface.prefix_bytes

    def decode(self, payload: bytes) -> Message:
        """Decode one frame's payload (without its length prefix)."""
        message = self.fast_decode(payload)
        if message is not None:
            return message
        return self.reference_decode(payload)

    def reference_decode(self, payload: bytes) -> Message:
        """:meth:`decode` through pyiso8583 alone: the fast path's fallback and reference."""
        prefix = self.interface.prefix_bytes
        if len(payload) < prefix:  # what pyiso8583 says of a short fixed-length field
            raise CodecError(
                f"Field data is {len(payload)} bytes, expecting {prefix}", field="header", offset=0
            )
        if not self.interface.secondary_bitmap:
            self._refuse_secondary_bitmap(payload)
        try:
            doc_dec, doc_enc = iso8583.decode(payload[prefix:], self._spec)
        except iso8583.DecodeError as err:
            raise CodecError(
                err.msg,
                field=_field_name(err.field),
                offset=prefix + err.pos,
                envelope=self._envelope(err.doc_dec),
            ) from None
        except KeyError as err:
            raise CodecError(
                "bitmap names a field the interface does not define", field=str(err.args[0])
            ) from None
        plan = self._decode_plan
        fields: dict[int, FieldValue] = {}
        for key, value in doc_dec.items():
            step = plan.get(key)
            if step is None:
                continue
            number, kind = step
            if kind == _BINARY:
                fields[number] = doc_enc[key]["data"]
            elif kind == _HEX:
                try:
                    fields[number] = bytes.fromhex(value)
                except ValueError:
                    raise CodecError(
                        "binary field in hex holds a non-hex character",
                        field=key,
                        offset=_offset_of(doc_enc, key, prefix),
                        envelope=self._envelope(doc_dec),
                    ) from None
            else:
                if kind == _DIGITS and not value.isdigit():
                    raise CodecError(
                        "numeric field holds a non-digit",
                        field=key,
                        offset=_offset_of(doc_enc, key, prefix),
                        envelope=self._envelope(doc_dec),
                    )
                fields[number] = value
        if prefix:
            tpdu, header = bytes(payload[:TPDU_BYTES]), bytes(payload[TPDU_BYTES:prefix])
            return Message(doc_dec["t"], fields, tpdu, header)  # positional: keywords cost more
        return Message(doc_dec["t"], fields)

    def _refuse_secondary_bitmap(self, payload: bytes) -> None:
        """A 64-field interface's frame with bit 1 set is a format error. Where its fields lie
        is then a guess — after 8 bytes of secondary bitmap, or at once (the bit set by
        mistake) — so its envelope is echoed only when exactly one reading decodes the whole
        frame with no field beyond 64: never fields read from the wrong offsets."""
        prefix = self.interface.prefix_bytes
        bitmap_at = prefix + (2 if self._spec["t"]["data_enc"] == "b" else 4)
        if len(payload) <= bitmap_at or not payload[bitmap_at] & 0x80:
            return
        cleared = payload[:bitmap_at] + bytes((payload[bitmap_at] & 0x7F,))
        readings = []
        for candidate in (payload, cleared + payload[bitmap_at + 1 :]):
            try:
                doc_dec, _ = iso8583.decode(candidate[prefix:], self._spec)
            except (iso8583.DecodeError, KeyError):
                continue
            if all(not key.isdigit() or int(key) <= 64 for key in doc_dec):
                readings.append(doc_dec)
        envelope = self._envelope(readings[0]) if len(readings) == 1 else {}
        raise CodecError(
            "secondary bitmap on a 64-field interface",
            field="bitmap",
            offset=bitmap_at,
            envelope=envelope,
        )

    def envelope_of(self, message: Message) -> dict[int, str]:
        """The interface's envelope fields of a decoded ``message`` that are well-formed: what
        a fault found after decoding (a mandatory field missing, no transaction) echoes."""
        fields = message.fields
        return self._envelope(
            {str(number): value for number, value in fields.items() if isinstance(value, str)}
        )

    def _envelope(self, doc_dec: Mapping[str, str]) -> dict[int, str]:
        """The interface's envelope fields among ``doc_dec`` that are well-formed."""
        envelope: dict[int, str] = {}
        for number in self.interface.envelope:
            value = doc_dec.get(str(number))
            if not value:
                continue
            ok = (
                value.isdigit()
                if number in self._digits
                else value.isascii() and value.isprintable()
            )
            if ok:
                envelope[number] = value
        return envelope

    def encode(self, message: Message) -> bytes:
        """Encode ``message`` to a frame payload (without the length prefix)."""
        payload = self.fast_encode(message)
        if payload is not None:
            return payload
        return self.reference_encode(message)

    def reference_encode(self, message: Message) -> bytes:
        """:meth:`encode` through pyiso8583 alone: the fast path's fallback and reference."""
        doc: dict[str, str] = {"t": message.mti}
        plan = self._encode_plan
        for number, value in message.fields.items():
            # A field the interface does not define goes as text: pyiso8583 refuses it below.
            key, kind = plan.get(number) or (str(number), _TEXT)
            if kind in (_BINARY, _HEX):
                if not isinstance(value, bytes):
                    raise CodecError("binary field given as text", field=key)
                doc[key] = value.hex() if kind == _BINARY else value.hex().upper()
            else:
                if not isinstance(value, str):
                    raise CodecError("text field given as bytes", field=key)
                if kind == _DIGITS and not value.isdigit():
                    raise CodecError("numeric field holds a non-digit", field=key)
                doc[key] = value
        prefix = self.interface.prefix_bytes
        head_bytes = len(message.tpdu) + len(message.header)
        if prefix and head_bytes != prefix:  # what pyiso8583 says of a fixed-length field
            raise CodecError(
                f"Field data is {head_bytes} bytes, expecting {prefix}", field="header"
            )
        try:
            encoded, _ = iso8583.encode(doc, self._spec)
        except iso8583.EncodeError as err:
            raise CodecError(err.msg, field=_field_name(err.field)) from None
        except KeyError as err:
            raise CodecError("field not defined by the interface", field=str(err.args[0])) from None
        if prefix:
            return b"".join((message.tpdu, message.header, encoded))
        return bytes(encoded)

    @property
    def mti_bytes(self) -> int:
        """The MTI's width on the wire: 4 ASCII digits, or 2 bytes of BCD."""
        return 2 if self.interface.encoding is Encoding.BCD else 4

    @property
    def mac_bytes(self) -> int:
        """The MAC field's width on the wire: 8 bytes, or 16 hex characters."""
        return 16 if self.interface.mac_field in self.interface.hex_fields else 8

    def mac_block(self, payload: bytes) -> bytes:
        """The bytes a MAC covers: MTI through the field before the MAC field, as transmitted.

        ``payload`` must carry the MAC field (the frame's last field); encode a message with 8
        zero bytes there, take this block, then :meth:`with_mac`.
        """
        return payload[self.interface.prefix_bytes : -self.mac_bytes]

    def with_mac(self, payload: bytes, mac: bytes) -> bytes:
        """``payload`` with its trailing MAC field replaced by ``mac`` (8 bytes)."""
        if len(mac) != 8:
            raise CodecError("a MAC field is 8 bytes", field=str(self.interface.mac_field))
        wire = mac.hex().upper().encode("ascii") if self.mac_bytes == 16 else mac
        return payload[: -self.mac_bytes] + wire

    def frame_length(self, buffer: bytes) -> int | None:
        """Where the first message in ``buffer`` ends (a link without a length header), or
        None while it is incomplete; CodecError when it cannot be a message at all."""
        prefix = self.interface.prefix_bytes
        if len(buffer) < prefix + self.mti_bytes:
            return None
        try:
            iso8583.decode(buffer[prefix:], self._spec)
        except iso8583.DecodeError as err:
            if err.msg == "Extra data after last field":
                return prefix + err.pos
            found = _INCOMPLETE.search(err.msg)
            if found and int(found[1]) < int(found[2]):
                return None
            raise CodecError(
                err.msg, field=_field_name(err.field), offset=prefix + err.pos
            ) from None
        except KeyError as err:
            raise CodecError(
                "bitmap names a field the interface does not define", field=str(err.args[0])
            ) from None
        return len(buffer)


def _field_name(field: str) -> str:
    return {"h": "header", "t": "MTI", "p": "bitmap", "1": "secondary bitmap"}.get(field, field)


def _offset_of(doc_enc: Mapping[str, Mapping[str, bytes]], key: str, offset: int) -> int:
    """Best-effort byte offset of field ``key``, the message starting at ``offset`` (only
    computed on the error path)."""
    for k, part in doc_enc.items():
        if k == key:
            return offset + len(part["len"])
        offset += len(part["len"]) + len(part["data"])
    return offset

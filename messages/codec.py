"""The ISO 8583 codec: bytes ↔ :class:`Message`, over pyiso8583.

A :class:`Message` holds typed field values: ``str`` for numeric and text fields (numerics are
checked to be digits), ``bytes`` for binary fields. The codec compiles its interface's spec once,
never mutates what it is given, and raises only :class:`~messages.errors.CodecError`, which names
the field and byte offset and never carries field data.

>>> from messages.spec_terminal import TERMINAL
>>> codec = Codec(TERMINAL)
>>> message = Message("0800", {11: "000001", 41: "POS00001", 60: "00000001004"},
...                   tpdu=bytes.fromhex("6000030000"), header=bytes.fromhex("603210320072"))
>>> codec.decode(codec.encode(message)) == message
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import iso8583

from messages.errors import CodecError
from messages.fieldspec import Encoding, InterfaceSpec, Kind

FieldValue = str | bytes

TPDU_BYTES = 5
_TEXT, _DIGITS, _BINARY = 0, 1, 2  # how decode treats each field's value


@dataclass(frozen=True, slots=True)
class Message:
    """One ISO 8583 message. Treat ``fields`` as read-only; build a new message to change it."""

    mti: str
    fields: Mapping[int, FieldValue]
    tpdu: bytes = b""
    header: bytes = b""

    def get(self, number: int) -> FieldValue | None:
        return self.fields.get(number)

    def text(self, number: int) -> str:
        """Field ``number`` as text; :class:`CodecError` if absent or binary."""
        value = self.fields.get(number)
        if not isinstance(value, str):
            raise CodecError("mandatory field missing", field=str(number))
        return value

    def binary(self, number: int) -> bytes:
        """Field ``number`` as bytes; :class:`CodecError` if absent or text."""
        value = self.fields.get(number)
        if not isinstance(value, bytes):
            raise CodecError("mandatory field missing", field=str(number))
        return value


@dataclass(frozen=True, slots=True)
class Codec:
    """Encoder and decoder for one interface. Build one per interface and share it."""

    interface: InterfaceSpec
    _spec: dict[str, Any] = field(init=False, repr=False, compare=False)
    _binary: frozenset[int] = field(init=False, repr=False, compare=False)
    _digits: frozenset[int] = field(init=False, repr=False, compare=False)
    _plan: dict[str, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = self.interface.fields
        object.__setattr__(self, "_spec", self.interface.compile())
        object.__setattr__(
            self, "_binary", frozenset(n for n, f in fields.items() if f.kind is Kind.B)
        )
        digits = (Kind.N,) if self.interface.encoding is Encoding.BCD else (Kind.N, Kind.Z)
        object.__setattr__(
            self, "_digits", frozenset(n for n, f in fields.items() if f.kind in digits)
        )
        plan = {
            str(n): (n, _BINARY if n in self._binary else _DIGITS if n in self._digits else _TEXT)
            for n in fields
        }
        object.__setattr__(self, "_plan", plan)

    @property
    def prefix_bytes(self) -> int:
        return self.interface.prefix_bytes

    def decode(self, payload: bytes) -> Message:
        """Decode one frame's payload (without its length prefix)."""
        try:
            doc_dec, doc_enc = iso8583.decode(payload, self._spec)
        except iso8583.DecodeError as err:
            raise CodecError(
                err.msg,
                field=_field_name(err.field),
                offset=err.pos,
                envelope=self._envelope(err.doc_dec),
            ) from None
        except KeyError as err:
            raise CodecError(
                "bitmap names a field the interface does not define", field=str(err.args[0])
            ) from None
        if "1" in doc_dec and not self.interface.secondary_bitmap:
            raise CodecError(
                "secondary bitmap on a 64-field interface",
                field="bitmap",
                offset=self.interface.prefix_bytes + 2,
            )
        plan = self._plan
        fields: dict[int, FieldValue] = {}
        for key, value in doc_dec.items():
            step = plan.get(key)
            if step is None:
                continue
            number, kind = step
            if kind == _BINARY:
                fields[number] = doc_enc[key]["data"]
            else:
                if kind == _DIGITS and not value.isdigit():
                    raise CodecError(
                        "numeric field holds a non-digit",
                        field=key,
                        offset=_offset_of(payload, doc_enc, key),
                        envelope=self._envelope(doc_dec),
                    )
                fields[number] = value
        prefix = self.interface.prefix_bytes
        if prefix:
            head = doc_enc["h"]["data"]
            return Message(doc_dec["t"], fields, tpdu=head[:TPDU_BYTES], header=head[TPDU_BYTES:])
        return Message(doc_dec["t"], fields)

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
        doc: dict[str, str] = {"t": message.mti}
        if self.interface.prefix_bytes:
            doc["h"] = (message.tpdu + message.header).hex()
        binary = self._binary
        for number, value in message.fields.items():
            if number in binary:
                if not isinstance(value, bytes):
                    raise CodecError("binary field given as text", field=str(number))
                doc[str(number)] = value.hex()
            else:
                if not isinstance(value, str):
                    raise CodecError("text field given as bytes", field=str(number))
                if number in self._digits and not value.isdigit():
                    raise CodecError("numeric field holds a non-digit", field=str(number))
                doc[str(number)] = value
        try:
            encoded, _ = iso8583.encode(doc, self._spec)
        except iso8583.EncodeError as err:
            raise CodecError(err.msg, field=_field_name(err.field)) from None
        except KeyError as err:
            raise CodecError("field not defined by the interface", field=str(err.args[0])) from None
        return bytes(encoded)

    def mac_block(self, payload: bytes) -> bytes:
        """The bytes a MAC covers: MTI through the field before the MAC field, as transmitted.

        ``payload`` must carry the MAC field (its 8 bytes are the frame's last); encode a message
        with 8 zero bytes there, take this block, then :meth:`with_mac`.
        """
        return payload[self.interface.prefix_bytes : -8]

    @staticmethod
    def with_mac(payload: bytes, mac: bytes) -> bytes:
        """``payload`` with its trailing 8-byte MAC field replaced by ``mac``."""
        if len(mac) != 8:
            raise CodecError("a MAC field is 8 bytes", field="64")
        return payload[:-8] + mac


def _field_name(field: str) -> str:
    return {"h": "header", "t": "MTI", "p": "bitmap", "1": "secondary bitmap"}.get(field, field)


def _offset_of(payload: bytes, doc_enc: Mapping[str, Mapping[str, bytes]], key: str) -> int:
    """Best-effort byte offset of field ``key`` (only computed on the error path)."""
    offset = 0
    for k, part in doc_enc.items():
        if k == key:
            return offset + len(part["len"])
        offset += len(part["len"]) + len(part["data"])
    return offset

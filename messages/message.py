"""One ISO 8583 message as the codec gives and takes it: its MTI, its fields by number, and the
bytes before the MTI. A leaf: the codec (:mod:`messages.codec`) and its compiled fast path
(:mod:`messages.compiled`) both build on it, and neither imports the other for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from messages.errors import CodecError

FieldValue = str | bytes


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

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


_new = object.__new__
_set_mti, _set_fields, _set_tpdu, _set_header = (
    Message.__dict__[name].__set__ for name in ("mti", "fields", "tpdu", "header")
)


def message(
    mti: str, fields: Mapping[int, FieldValue], tpdu: bytes = b"", header: bytes = b""
) -> Message:
    """``Message(mti, fields, tpdu, header)`` without the frozen dataclass's ``__init__`` (its
    four ``object.__setattr__`` calls through a Python frame: some 7,000 instructions, and the
    daemon makes two messages an exchange); each slot set by its own descriptor.

    >>> message("0800", {11: "000001"}) == Message("0800", {11: "000001"})
    True
    """
    made: Message = _new(Message)
    _set_mti(made, mti)
    _set_fields(made, fields)
    _set_tpdu(made, tpdu)
    _set_header(made, header)
    return made

"""Protocol faults of the message layer.

A fault names where it happened (field and byte offset) and why, and never carries card data:
the switch logs it and answers response code 30 (format error).
"""

from __future__ import annotations

from collections.abc import Mapping


class CodecError(ValueError):
    """A message that cannot be decoded, encoded, parsed or built.

    >>> err = CodecError("field data is 5 bytes, expecting 6", field="41", offset=57)
    >>> str(err)
    'field 41 at byte 57: field data is 5 bytes, expecting 6'
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str = "",
        offset: int | None = None,
        envelope: Mapping[int, str] | None = None,
    ) -> None:
        self.reason = reason
        self.field = field
        self.offset = offset
        # Envelope fields (STAN, terminal, codes) decoded before the fault, so the reply can
        # echo them; only the interface's envelope fields, never card data, never in str().
        self.envelope: Mapping[int, str] = envelope or {}
        where = []
        if field:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"at byte {offset}")
        super().__init__(f"{' '.join(where)}: {reason}" if where else reason)


class FramingError(CodecError):
    """A frame length that cannot be right: too large, not a number, or zero."""


class UnknownTransaction(CodecError):
    """A well-formed message that matches no row of the interface's transaction table."""

"""What every typed message carries, and the row type of transaction tables.

A :class:`Row` identifies one transaction of an interface by its message type and codes; the
typed classes add their own attributes through :mod:`messages.binding`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    """One row of an interface's transaction table.

    ``processing_code`` (F3), ``condition_code`` (F25), ``txn_type`` (60.1) and
    ``network_code`` (60.3, or bank F70) are what identify the request; ``None`` means the
    field is absent. Responses use ``mti`` + 10 and echo the same codes."""

    name: str
    mti: str
    processing_code: str | None
    condition_code: str | None
    txn_type: str | None
    network_code: str | None
    description: str
    reversible: bool = False

    @property
    def response_mti(self) -> str:
        return f"{int(self.mti) + 10:04d}"


def response_mti(mti: str) -> str:
    """The response MTI of a request MTI (0200 → 0210, 0421 → 0430).

    >>> response_mti("0421")
    '0430'
    """
    return f"{(int(mti) // 10) * 10 + 10:04d}"


def message_class(mti: str) -> str:
    """The MTI with only its repeat digit normalised (0421 → 0420, 0201 → 0200).

    >>> message_class("0421")
    '0420'
    """
    origin = int(mti[3])
    return mti[:3] + str(origin - origin % 2)

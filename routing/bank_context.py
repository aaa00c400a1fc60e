"""What a bank-link handler is given: the same :class:`RequestContext` a terminal handler gets
(the bank counter as a terminal of kind ``bank_counter``, so the load and unload cores are shared,
not copied), and the card status register that loss reports and unlosses change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from routing.context import RequestContext


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What a status change found and did."""

    status_before: str | None  # None: no such card
    blacklist_version: int  # the list version that holds the change; 0 when nothing changed


class CardStatusRegister(Protocol):
    async def report_lost(self, card_no: str, at_us: int) -> StatusChange:
        """An active card becomes lost and is added to the blacklist under a new version (a
        card already lost is left as it is)."""
        ...

    async def unloss(self, card_no: str) -> StatusChange:
        """A lost card becomes active; its blacklist entry is removed under a new version."""
        ...


@dataclass(frozen=True, slots=True)
class BankContext:
    base: RequestContext  # terminal = the counter (F41) of the acquiring bank (F32)
    card_status: CardStatusRegister

"""What a bank-link handler is given: the same :class:`RequestContext` a terminal handler gets
(the bank counter as a terminal of kind ``bank_counter``, so the load and unload cores are shared,
not copied), and the card status register that loss reports and unlosses change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hsm.keys import KeyRef
from messages.bank import SavingsDebit
from routing.context import RequestContext

# What a savings link answers besides the bank's own codes: sent, no answer in time (a
# reversal follows by store-and-forward); not sent at all (the link is down: nothing to undo).
TIMED_OUT = "98"
LINK_DOWN = "91"


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


class SavingsLink(Protocol):
    async def debit(self, request: SavingsDebit) -> str:
        """The bank's response code for a savings debit, or TIMED_OUT / LINK_DOWN."""
        ...


@dataclass(frozen=True, slots=True)
class BankContext:
    base: RequestContext  # terminal = the counter (F41) of the acquiring bank (F32)
    card_status: CardStatusRegister
    bank_id: str = ""  # the bank of this link: the party of its savings-funded loads
    savings: SavingsLink | None = None  # the outbound link to the bank as savings issuer
    zpk_in: KeyRef | None = None  # PINs from the counters
    zpk_out: KeyRef | None = None  # PINs towards the bank as issuer

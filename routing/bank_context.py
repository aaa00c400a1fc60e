"""What a bank-link handler is given: the same :class:`RequestContext` a terminal handler gets
(the bank counter as a terminal of kind ``bank_counter``, so the load and unload cores are shared,
not copied), and the card status register that loss reports and unlosses change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    # a replacement refused for its new card: "unknown", "other_holder" or "not_active"
    new_card_problem: str = ""


class CardStatusRegister(Protocol):
    async def report_lost(self, card_no: str, at_us: int) -> StatusChange:
        """An active card becomes lost and is added to the blacklist under a new version (a
        card already lost is left as it is)."""
        ...

    async def unloss(self, card_no: str) -> StatusChange:
        """A lost card becomes active; its blacklist entry is removed under a new version."""
        ...

    async def cancel(self, card_no: str, at_us: int) -> StatusChange:
        """注销: an active or lost card becomes cancelled (blacklisted under a new version, its
        shadows swept back after the offline-upload grace period)."""
        ...

    async def replace(self, card_no: str, new_card_no: str, at_us: int) -> StatusChange:
        """Card replacement: an active or lost card becomes replaced by ``new_card_no`` — an
        active card of the same cardholder already on file — and is blacklisted and swept like
        a cancelled one; the new card then takes ordinary loads."""
        ...


class SavingsLink(Protocol):
    """The bank as issuer of savings accounts, as an EP load handler sees it (one per bank; its
    outbound connections behind it)."""

    @property
    def bank_id(self) -> str:
        """The bank: the party of its savings-funded loads (their bank clearing account)."""
        ...

    async def debit(self, request: SavingsDebit) -> str:
        """The bank's response code for a savings debit, or TIMED_OUT / LINK_DOWN."""
        ...

    async def pin_key(self) -> KeyRef | None:
        """The bank's current ZPK: PINs are translated to it."""
        ...

    async def envelope(self) -> dict[str, str]:
        """F11, F7 and F32 (the centre's) for a message the centre originates on this link (F11
        from the shared sequence: awaited, so a burst never runs out of numbers)."""
        ...


class KeyExchange(Protocol):
    async def take(self, field48: str, now: datetime) -> str:
        """The bank's new zone keys (F48, under the link's ZMK) imported, KCVs checked; the
        answer's F48. ValueError when they cannot be taken (nothing changes then)."""
        ...


@dataclass(frozen=True, slots=True)
class BankContext:
    base: RequestContext  # terminal = the counter (F41) of the acquiring bank (F32)
    card_status: CardStatusRegister
    bank_id: str = ""  # the bank of this link: the party of its savings-funded loads
    savings: SavingsLink | None = None  # the outbound link to the bank as savings issuer
    zpk_in: KeyRef | None = None  # PINs from the counters
    keys: KeyExchange | None = None  # the inbound link's zone keys


@dataclass(frozen=True, slots=True)
class SavingsRoute:
    """Which cards' EP loads go to which bank: card BIN prefixes (none: every card) → the
    bank's savings link (``None`` where only the table is shown, `medswitch routes`)."""

    bank_id: str
    bins: tuple[str, ...] = ()
    issuer: SavingsLink | None = None

"""The card's balance under MAC1, at each load, against its shadow — after letting the card's
online counter prove or disprove the attempts still in doubt.

A retransmitted request carries the same INITIALIZE random as its attempt: that attempt is still
under way, never disproven by its own counter.

The card is the authority: a chip below its shadow is normal (offline debits not yet uploaded); a
chip above its shadow goes to review. The counter proves: an open attempt with the card's current
counter did not happen (the card would have moved on); one with an older counter happened, unless
another attempt already took that counter's proof, or several are open for it (review).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass

from ledger.core import Ledger, ReviewItem
from ledger.events.common import EventResult, Purse, ReviewReason, review, shadow
from ledger.events.loads import Attempt, doubt_accounts, open_attempts, resolve_attempt


class ChipStatus(enum.Enum):
    EQUAL = "equal"
    CHIP_BELOW_SHADOW = "chip_below_shadow"  # normal: offline debits not yet uploaded
    CHIP_ABOVE_SHADOW = "chip_above_shadow"  # in review


@dataclass(frozen=True)
class ChipCheck:
    status: ChipStatus
    chip_fen: int
    shadow_fen: int
    proofs: tuple[EventResult, ...] = ()
    review: ReviewItem | None = None

    @property
    def difference_fen(self) -> int:
        """Chip minus shadow."""
        return self.chip_fen - self.shadow_fen


async def prove_by_counter(
    ledger: Ledger,
    application_serial: str,
    purse: Purse,
    online_counter: int,
    card_random: str | None = None,
) -> list[EventResult]:
    """Resolve the card's open attempts with what its current online counter proves.

    `card_random` is the random of the INITIALIZE that reported the counter. An open attempt
    with the card's current counter did not happen only if that INITIALIZE was a new one (a
    different random): the same random is a retransmission of the attempt itself, still under
    way. Without `card_random` such attempts are left open for a later proof.
    """
    by_counter: dict[int, list[Attempt]] = defaultdict(list)
    for attempt in await open_attempts(ledger, application_serial, purse):
        by_counter[attempt.online_counter].append(attempt)
    results: list[EventResult] = []
    for counter, attempts in sorted(by_counter.items()):
        if counter == online_counter:
            superseded = [a for a in attempts if card_random not in (None, a.card_random)]
            results += [await resolve_attempt(ledger, a, happened=False) for a in superseded]
        else:
            results += await _prove_older(ledger, counter, attempts, online_counter)
    return results


async def _prove_older(
    ledger: Ledger, counter: int, attempts: list[Attempt], online_counter: int
) -> list[EventResult]:
    if counter > online_counter:  # the card is behind what we recorded: a person must look
        await review(ledger, ReviewReason.AMBIGUOUS_PROOF, attempts[0].reference)
        return []
    taken = await ledger.lookup_transfers([attempts[0].proof_id])
    if any(p.result.ok for p in taken.values()):  # another attempt took this counter
        return [await resolve_attempt(ledger, a, happened=False) for a in attempts]
    if len(attempts) == 1:
        return [await resolve_attempt(ledger, attempts[0], happened=True)]
    await review(ledger, ReviewReason.AMBIGUOUS_PROOF, attempts[0].reference)
    return []


async def check_chip_balance(
    ledger: Ledger,
    application_serial: str,
    purse: Purse,
    chip_balance_fen: int,
    online_counter: int,
    card_random: str | None = None,
) -> ChipCheck:
    """Compare the balance the card reported under a verified MAC1 with its shadow, after
    :func:`prove_by_counter` (pass the INITIALIZE's `card_random`, see there)."""
    card_shadow = shadow(purse, application_serial)
    doubts = doubt_accounts(application_serial, purse)
    balances = await ledger.balances([card_shadow, *doubts])
    proofs: list[EventResult] = []
    if any(balances[d].balance_fen for d in doubts if d in balances):  # something in doubt
        proofs = await prove_by_counter(
            ledger, application_serial, purse, online_counter, card_random
        )
        if proofs:
            balances = await ledger.balances([card_shadow])
    balance = balances.get(card_shadow)
    shadow_fen = balance.balance_fen if balance is not None else 0
    if chip_balance_fen < shadow_fen:
        status = ChipStatus.CHIP_BELOW_SHADOW
    elif chip_balance_fen > shadow_fen:
        status = ChipStatus.CHIP_ABOVE_SHADOW
    else:
        status = ChipStatus.EQUAL
    item = None
    if status is ChipStatus.CHIP_ABOVE_SHADOW:
        subject = f"chip|{application_serial}|{purse.value}|{online_counter}"
        item = await review(
            ledger,
            ReviewReason.CHIP_ABOVE_SHADOW,
            subject,
            chip_balance_fen - shadow_fen,
            detail=f"chip={chip_balance_fen} shadow={shadow_fen}",
        )
    return ChipCheck(status, chip_balance_fen, shadow_fen, tuple(proofs), item)

"""What every business event shares: transfer codes, outcomes, review reasons, the centre's own
accounts, and how a batch of core results becomes one outcome (with a review item when odd)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger.core import (
    Account,
    Ledger,
    ReviewItem,
    Transfer,
    TransferResult,
    new_account,
    transfer_id,
)
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id

#: The owner of the centre's single accounts (pooled fund, fund bank account, EP float, …).
CENTRE = "centre"

R = TransferResult
_NOT_FOUND = (R.DEBIT_ACCOUNT_NOT_FOUND, R.CREDIT_ACCOUNT_NOT_FOUND)


class Purse(enum.Enum):
    ED = "ED"  # 电子存折: insurance money
    EP = "EP"  # 电子钱包: the cardholder's own money


class TransferCode(enum.IntEnum):
    """The `code` of each posting of DESIGN §5's table."""

    CONTRIBUTION_PERSONAL = 101
    CONTRIBUTION_POOLED = 102
    CONTRIBUTION_RECEIVED = 103
    SAVINGS_DEBITS_SETTLED = 104
    LOAD_INTO_DOUBT = 201
    LOAD_PROVEN = 202
    LOAD_TO_SHADOW = 203
    LOAD_UNDONE = 204
    UNLOAD_INTO_DOUBT = 211
    UNLOAD_PROVEN = 212
    UNLOAD_TO_FUND = 213
    UNLOAD_UNDONE = 214
    CARD_DEBIT = 301
    BILL_POOLED_SHARE = 302
    VOID_POOLED = 311
    VOID_PERSONAL = 312
    VOID_EP_REFUND = 313
    SWEEP_ED = 321
    SWEEP_EP = 322
    PAYOUT = 401
    PAYOUT_PAID = 402
    PAYOUT_RETURNED = 403


class Outcome(enum.Enum):
    """What a business event did."""

    POSTED = "posted"  # its money moved now
    ALREADY_POSTED = "already_posted"  # a replay: it had moved before; nothing moved now
    NOTHING_TO_POST = "nothing_to_post"  # valid, but no money to move (a zero share…)
    INSUFFICIENT_FUNDS = "insufficient_funds"  # a never-negative account said no: decline
    TOO_EARLY = "too_early"  # e.g. the grace period after a cancel is not over
    CONFLICT = "conflict"  # its id was used otherwise, or it was resolved otherwise: in review
    REFUSED = "refused"  # the ledger refused it (account missing, closed…): in review


class ReviewReason(enum.Enum):
    CHIP_ABOVE_SHADOW = "chip_above_shadow"
    SHADOW_BELOW_ZERO = "shadow_below_zero"
    PSAM_OTHER_INSTITUTION = "psam_other_institution"
    ID_CONFLICT = "id_conflict"
    LEDGER_REFUSED = "ledger_refused"
    AMBIGUOUS_PROOF = "ambiguous_proof"
    ATTEMPT_NOT_FOUND = "attempt_not_found"
    ATTEMPT_ALREADY_UNDONE = "attempt_already_undone"
    SWEEP_CHANGED = "sweep_changed"
    SAME_OPERATOR = "same_operator"


@dataclass(frozen=True)
class EventResult:
    outcome: Outcome
    transfer_ids: tuple[str, ...] = ()
    review: ReviewItem | None = None
    details: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the event's money is posted (now or before) or there was none to post."""
        return self.outcome in (Outcome.POSTED, Outcome.ALREADY_POSTED, Outcome.NOTHING_TO_POST)


def centre_accounts() -> list[Account]:
    """The centre's single accounts; open them once at deployment."""
    kinds = (
        K.POOLED_FUND,
        K.FUND_BANK,
        K.EP_FLOAT,
        K.ED_PROOF_CLEARING,
        K.EP_PROOF_CLEARING,
        K.INSURANCE_PAYOUTS_IN_FLIGHT,
        K.EP_PAYOUTS_IN_FLIGHT,
    )
    return [new_account(kind, CENTRE) for kind in kinds]


def card_accounts(application_serial: str) -> list[Account]:
    """A card's shadows and suspense accounts; open them at issuance."""
    kinds = (
        K.CARD_ED_SHADOW,
        K.CARD_EP_SHADOW,
        K.ED_LOADS_IN_DOUBT,
        K.EP_LOADS_IN_DOUBT,
        K.UNLOADS_IN_DOUBT,
    )
    return [new_account(kind, application_serial) for kind in kinds]


def cardholder_accounts(cardholder_id: str) -> list[Account]:
    return [
        new_account(K.PERSONAL_FUND, cardholder_id),
        new_account(K.REFUNDS_PAYABLE, cardholder_id),
    ]


def institution_accounts(institution_id: str) -> list[Account]:
    """A designated medical institution's payables."""
    return [
        new_account(K.INSTITUTION_PAYABLE_INSURANCE, institution_id),
        new_account(K.INSTITUTION_PAYABLE_EP, institution_id),
    ]


def unit_accounts(unit_id: str) -> list[Account]:
    return [new_account(K.CONTRIBUTIONS_RECEIVABLE, unit_id)]


def bank_accounts(bank_id: str) -> list[Account]:
    return [new_account(K.BANK_CLEARING, bank_id)]


def centre(kind: K) -> str:
    return account_id(kind, CENTRE)


def shadow(purse: Purse, application_serial: str) -> str:
    kind = K.CARD_ED_SHADOW if purse is Purse.ED else K.CARD_EP_SHADOW
    return account_id(kind, application_serial)


async def review(
    ledger: Ledger, reason: ReviewReason, subject: str, amount_fen: int = 0, detail: str = ""
) -> ReviewItem:
    """Record an anomaly for a person (idempotent per reason and subject)."""
    item = ReviewItem(
        key=transfer_id("review", reason.value, subject),
        reason=reason.value,
        reference=subject,
        amount_fen=amount_fen,
        detail=detail,
    )
    await ledger.add_review(item)
    return item


async def post_event(
    ledger: Ledger,
    subject: str,
    transfers: Sequence[Transfer],
    *,
    linked: bool = True,
    ensure: Sequence[Account] = (),
) -> EventResult:
    """Post an event's transfers (all or none) and turn the core's results into an outcome.

    `ensure` names the accounts of the cards, cardholders and institutions the event touches:
    when one is missing (a card issued, a cardholder imported, an institution added without
    them) they are opened — they hold no money yet — and the event is posted again, once. A
    failed linked batch leaves no trace, so the retry is decided afresh. A refusal other than
    insufficient funds is an anomaly: it goes to review with the results.
    """
    if not transfers:
        return EventResult(Outcome.NOTHING_TO_POST)
    results = await ledger.post(transfers, linked=linked)
    if ensure and linked and any(r in _NOT_FOUND for r in results):
        await ledger.open_accounts(ensure)
        results = await ledger.post(transfers, linked=linked)
    return await outcome_of(ledger, subject, transfers, results)


async def outcome_of(
    ledger: Ledger, subject: str, transfers: Sequence[Transfer], results: Sequence[R]
) -> EventResult:
    """The outcome of an event's posted transfers (see :func:`post_event`), refusals reviewed."""
    ids = tuple(t.id for t in transfers)
    if not transfers:
        return EventResult(Outcome.NOTHING_TO_POST)
    if all(r is R.CREATED for r in results):
        return EventResult(Outcome.POSTED, ids)
    if all(r is R.EXISTS for r in results):
        return EventResult(Outcome.ALREADY_POSTED, ids)
    if all(r.ok for r in results):  # a partial replay of an unlinked event
        return EventResult(Outcome.POSTED, ids)
    failed = [r for r in results if not r.ok and r is not R.LINKED_EVENT_FAILED]
    if failed == [R.INSUFFICIENT_FUNDS]:
        return EventResult(Outcome.INSUFFICIENT_FUNDS, ids)
    detail = ",".join(r.name for r in results)
    if R.EXISTS_WITH_DIFFERENT_DATA in failed:
        item = await review(ledger, ReviewReason.ID_CONFLICT, subject, detail=detail)
        return EventResult(Outcome.CONFLICT, ids, item)
    item = await review(ledger, ReviewReason.LEDGER_REFUSED, subject, detail=detail)
    return EventResult(Outcome.REFUSED, ids, item)

"""Money that moves by files: contributions and the bank statements that settle them, the bank's
statement of savings debits (EP float → bank clearing), and day-end payouts in flight, paid or
returned. Each line's transfer ids come from the line's own identity, so a file posted twice
posts once."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.core import Ledger, Transfer, transfer_id
from ledger.events.common import (
    EventResult,
    Outcome,
    ReviewReason,
    TransferCode,
    bank_accounts,
    cardholder_accounts,
    centre,
    post_event,
    review,
    unit_accounts,
)
from ledger.kinds import AccountKind as K
from ledger.kinds import Side, account_id, kind_of, side_of


@dataclass(frozen=True)
class ContributionLine:
    """One cardholder's contribution for a period, already split by the policy's age ratios."""

    unit_id: str
    period: str  # e.g. "2026-11"
    cardholder_id: str
    personal_fen: int
    pooled_fen: int


@dataclass(frozen=True)
class StatementLine:
    """A line of a bank statement: money received from a unit, or savings debits settled."""

    statement_id: str
    line_no: int
    party_id: str  # the employer unit (contributions) or the bank (savings debits)
    amount_fen: int


@dataclass(frozen=True)
class PayoutOrder:
    """A day-end payout from a payable (an institution's, or a cardholder's refunds)."""

    payout_id: str
    payable_account: str  # payins:…, payep:… or refund:…
    amount_fen: int
    requested_by: str
    approved_by: str


def contribution_transfers(line: ContributionLine) -> list[Transfer]:
    """The transfers of one contribution line (also used by bulk loads such as the demo)."""
    receivable = account_id(K.CONTRIBUTIONS_RECEIVABLE, line.unit_id)
    ref = contribution_reference(line)
    key = (line.unit_id, line.period, line.cardholder_id)
    shares = (
        ("contribution-personal", account_id(K.PERSONAL_FUND, line.cardholder_id),
         line.personal_fen, TransferCode.CONTRIBUTION_PERSONAL),
        ("contribution-pooled", centre(K.POOLED_FUND), line.pooled_fen,
         TransferCode.CONTRIBUTION_POOLED),
    )  # fmt: skip
    return [
        Transfer(transfer_id(name, *key), receivable, credit, amount, code, ref)
        for name, credit, amount, code in shares
        if amount
    ]


def contribution_reference(line: ContributionLine) -> str:
    return f"contribution|{line.unit_id}|{line.period}|{line.cardholder_id}"


async def post_contribution(ledger: Ledger, line: ContributionLine) -> EventResult:
    """contributions receivable → personal fund (individual share) and pooled fund (the rest)."""
    ensure = cardholder_accounts(line.cardholder_id) + unit_accounts(line.unit_id)
    ref, transfers = contribution_reference(line), contribution_transfers(line)
    return await post_event(ledger, ref, transfers, ensure=ensure)


async def post_contribution_received(ledger: Ledger, line: StatementLine) -> EventResult:
    """The bank statement: fund bank account → contributions receivable of the unit."""
    ref = f"statement|{line.statement_id}|{line.line_no}"
    transfer = Transfer(
        transfer_id("contribution-received", line.statement_id, line.line_no),
        centre(K.FUND_BANK),
        account_id(K.CONTRIBUTIONS_RECEIVABLE, line.party_id),
        line.amount_fen,
        TransferCode.CONTRIBUTION_RECEIVED,
        ref,
    )
    return await post_event(ledger, ref, [transfer])


async def post_savings_debits_settled(ledger: Ledger, line: StatementLine) -> EventResult:
    """The bank's statement of savings debits: EP float → bank clearing (settles it)."""
    ref = f"savings-statement|{line.statement_id}|{line.line_no}"
    transfer = Transfer(
        transfer_id("savings-debits-settled", line.statement_id, line.line_no),
        centre(K.EP_FLOAT),
        account_id(K.BANK_CLEARING, line.party_id),
        line.amount_fen,
        TransferCode.SAVINGS_DEBITS_SETTLED,
        ref,
    )
    return await post_event(ledger, ref, [transfer], ensure=bank_accounts(line.party_id))


def _in_flight(payable_account: str) -> str:
    side = side_of(kind_of(payable_account))
    kind = K.INSURANCE_PAYOUTS_IN_FLIGHT if side is Side.INSURANCE else K.EP_PAYOUTS_IN_FLIGHT
    return centre(kind)


def _paid_to(payable_account: str) -> str:
    side = side_of(kind_of(payable_account))
    return centre(K.FUND_BANK if side is Side.INSURANCE else K.EP_FLOAT)


async def post_payout(ledger: Ledger, order: PayoutOrder) -> EventResult:
    """Day-end payout, approved by a second operator: payable → payouts in flight."""
    ref = f"payout|{order.payout_id}"
    if order.requested_by == order.approved_by:
        item = await review(ledger, ReviewReason.SAME_OPERATOR, ref, order.amount_fen)
        return EventResult(Outcome.REFUSED, (), item)
    transfer = Transfer(
        transfer_id("payout", order.payout_id),
        order.payable_account,
        _in_flight(order.payable_account),
        order.amount_fen,
        TransferCode.PAYOUT,
        ref,
    )
    return await post_event(ledger, ref, [transfer])


async def resolve_payout(ledger: Ledger, payout_id: str, *, paid: bool) -> EventResult:
    """The bank's return file: in flight → fund bank / EP float (paid) or → payable (returned,
    to be re-issued). A payout resolves exactly once: both outcomes share one transfer id."""
    ref = f"payout|{payout_id}"
    found = (await ledger.lookup_transfers([transfer_id("payout", payout_id)])).values()
    sent = next((p.transfer for p in found if p.result.ok), None)
    if sent is None:
        item = await review(ledger, ReviewReason.ATTEMPT_NOT_FOUND, ref)
        return EventResult(Outcome.REFUSED, (), item)
    payable = sent.debit_account_id
    transfer = Transfer(
        transfer_id("payout-result", payout_id),
        sent.credit_account_id,
        _paid_to(payable) if paid else payable,
        sent.amount_fen,
        TransferCode.PAYOUT_PAID if paid else TransferCode.PAYOUT_RETURNED,
        ref,
    )
    return await post_event(ledger, ref, [transfer])

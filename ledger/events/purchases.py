"""Spending: card debits confirmed by TAC (online advice or offline upload, whichever comes first,
posted once per (PSAM terminal number, PSAM serial)), bill completion (the pooled share, once per
bill), voids with refunds, and the sweep of a cancelled or replaced card's shadows after the
offline-upload grace period.

The card is the authority: a TAC-valid debit always posts, whatever its shadow says; anomalies go
to review beside it, never to the bin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.core import Account, Ledger, Transfer, transfer_id
from ledger.events.common import (
    EventResult,
    Outcome,
    Purse,
    ReviewReason,
    TransferCode,
    card_accounts,
    cardholder_accounts,
    centre,
    institution_accounts,
    post_event,
    review,
    shadow,
)
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id

if TYPE_CHECKING:
    from ledger.medical.bills import BillRecord

GRACE_PERIOD = dt.timedelta(days=30)


@dataclass(frozen=True)
class CardDebit:
    """A card debit whose TAC verified. Offline purchases with no bill have `bill_id` None."""

    psam_terminal_no: str
    psam_serial: int
    application_serial: str
    purse: Purse
    amount_fen: int
    institution_id: str  # the institution owning the PSAM bound into the TAC: it is paid
    terminal_institution_id: str  # the institution of the terminal that sent it
    bill_id: str | None = None


@dataclass(frozen=True)
class BillCompletion:
    bill_id: str
    institution_id: str
    pooled_share_fen: int


@dataclass(frozen=True)
class Void:
    """A void after the card was debited: every share goes back where it came from."""

    bill_id: str
    institution_id: str
    cardholder_id: str
    pooled_share_fen: int
    ed_share_fen: int
    ep_share_fen: int


@dataclass(frozen=True)
class CardSweep:
    """A cancelled (注销) or replaced card whose shadows go back after the grace period."""

    application_serial: str
    cardholder_id: str
    cancelled_at: dt.datetime
    grace: dt.timedelta = GRACE_PERIOD


def card_debit_id(psam_terminal_no: str, psam_serial: int) -> str:
    return transfer_id("card-debit", psam_terminal_no, psam_serial)


async def post_card_debit(ledger: Ledger, debit: CardDebit) -> EventResult:
    """ED shadow → institution payable (insurance); EP shadow → institution payable (EP)."""
    subject = f"card-debit|{debit.psam_terminal_no}|{debit.psam_serial}"
    payable_kind = (
        K.INSTITUTION_PAYABLE_INSURANCE if debit.purse is Purse.ED else K.INSTITUTION_PAYABLE_EP
    )
    transfer = Transfer(
        card_debit_id(debit.psam_terminal_no, debit.psam_serial),
        shadow(debit.purse, debit.application_serial),
        account_id(payable_kind, debit.institution_id),
        debit.amount_fen,
        TransferCode.CARD_DEBIT,
        # The card's debit, not the bill it paid: an upload of the same debit cannot name the
        # bill its advice named, and must meet the advice on the same id with the same data.
        f"{subject}|{debit.application_serial}",
    )
    ensure = card_accounts(debit.application_serial) + institution_accounts(debit.institution_id)
    result = await post_event(ledger, subject, [transfer], ensure=ensure)
    if result.outcome is Outcome.POSTED:
        await _review_debit(ledger, debit, subject)
    return result


async def _review_debit(ledger: Ledger, debit: CardDebit, subject: str) -> None:
    if debit.institution_id != debit.terminal_institution_id:
        detail = f"psam={debit.institution_id} terminal={debit.terminal_institution_id}"
        await review(ledger, ReviewReason.PSAM_OTHER_INSTITUTION, subject, debit.amount_fen, detail)
    balance = await ledger.balance(shadow(debit.purse, debit.application_serial))
    if balance is not None and balance.balance_fen < 0:
        await review(ledger, ReviewReason.SHADOW_BELOW_ZERO, subject, balance.balance_fen)


async def post_bill_completion(ledger: Ledger, bill: BillCompletion) -> EventResult:
    """Pooled fund → institution payable (insurance) for the pooled share, once per bill."""
    transfers = bill_completion_transfers(bill)
    ensure = institution_accounts(bill.institution_id)
    return await post_event(ledger, f"bill|{bill.bill_id}", transfers, ensure=ensure)


def bill_completion_transfers(bill: BillCompletion) -> list[Transfer]:
    """The completion's one transfer (none for a bill with no pooled share)."""
    if bill.pooled_share_fen == 0:
        return []
    return [
        Transfer(
            transfer_id("bill-pooled", bill.bill_id),
            centre(K.POOLED_FUND),
            account_id(K.INSTITUTION_PAYABLE_INSURANCE, bill.institution_id),
            bill.pooled_share_fen,
            TransferCode.BILL_POOLED_SHARE,
            f"bill|{bill.bill_id}",
        )
    ]


def debit_accounts(transfer: Transfer) -> list[Account]:
    """A card debit naming an account not yet open: its card's accounts (the shadow debited
    names the card) and its institution's (the payable credited names it). Run on the ledger's
    writer (an `Opening`): here, not in routing, so that the writer process never imports the
    switch's handlers to unpickle it."""
    card = transfer.debit_account_id.partition(":")[2]
    institution = transfer.credit_account_id.partition(":")[2]
    return card_accounts(card) + institution_accounts(institution)


def bill_completion(record: BillRecord) -> BillCompletion:
    return BillCompletion(record.bill_id, record.institution_id, record.split.pooled_fen)


def paid_bill(found: tuple[BillRecord, bool]) -> tuple[BillCompletion, bool]:
    """What an advice reads of the bill its debit completed (a ``post_and_call``'s ``brief``,
    run on the ledger's writer): its completion, and whether the debit moved it — not the
    whole record back across the writer process's wire."""
    return bill_completion(found[0]), found[1]


def bill_completion_postings(
    found: tuple[BillRecord, bool],
) -> tuple[list[Transfer], Callable[[Transfer], list[Account]]]:
    """Run on the writer, in the completing transaction (a `ledger.writer.jobs.Postings`): the
    bill's pooled share, and the institution's accounts opened if it has none yet (built only
    then)."""
    completion = bill_completion(found[0])
    institution = completion.institution_id
    return bill_completion_transfers(completion), lambda _: institution_accounts(institution)


async def post_void(ledger: Ledger, void: Void) -> EventResult:
    """Pooled share → pooled fund; ED share → personal fund; EP share → refunds payable (paid to
    the savings account through the cardholder refund file). All or nothing, once per bill."""
    subject = f"void|{void.bill_id}"
    payable_insurance = account_id(K.INSTITUTION_PAYABLE_INSURANCE, void.institution_id)
    shares = (
        ("void-pooled", payable_insurance, centre(K.POOLED_FUND), void.pooled_share_fen,
         TransferCode.VOID_POOLED),
        ("void-personal", payable_insurance, account_id(K.PERSONAL_FUND, void.cardholder_id),
         void.ed_share_fen, TransferCode.VOID_PERSONAL),
        ("void-ep", account_id(K.INSTITUTION_PAYABLE_EP, void.institution_id),
         account_id(K.REFUNDS_PAYABLE, void.cardholder_id), void.ep_share_fen,
         TransferCode.VOID_EP_REFUND),
    )  # fmt: skip
    transfers = [
        Transfer(transfer_id(name, void.bill_id), debit, credit, amount, code, subject)
        for name, debit, credit, amount, code in shares
        if amount
    ]
    ensure = institution_accounts(void.institution_id) + cardholder_accounts(void.cardholder_id)
    return await post_event(ledger, subject, transfers, ensure=ensure)


async def post_card_sweep(ledger: Ledger, sweep: CardSweep, now: dt.datetime) -> EventResult:
    """After the grace period: ED shadow → personal fund, EP shadow → refunds payable."""
    subject = f"sweep|{sweep.application_serial}"
    if now < sweep.cancelled_at + sweep.grace:
        return EventResult(Outcome.TOO_EARLY)
    ed, ep = shadow(Purse.ED, sweep.application_serial), shadow(Purse.EP, sweep.application_serial)
    balances = await ledger.balances([ed, ep])
    targets = (
        (ed, account_id(K.PERSONAL_FUND, sweep.cardholder_id), TransferCode.SWEEP_ED),
        (ep, account_id(K.REFUNDS_PAYABLE, sweep.cardholder_id), TransferCode.SWEEP_EP),
    )
    transfers = []
    for source, target, code in targets:
        balance = balances.get(source)
        amount = balance.balance_fen if balance is not None else 0
        if amount < 0:
            await review(ledger, ReviewReason.SHADOW_BELOW_ZERO, f"{subject}|{source}", amount)
        elif amount > 0:
            sweep_id = transfer_id("sweep", source)
            transfers.append(Transfer(sweep_id, source, target, amount, code, subject))
    ensure = cardholder_accounts(sweep.cardholder_id)
    result = await post_event(ledger, subject, transfers, ensure=ensure)
    if result.outcome is Outcome.CONFLICT:  # swept before; a late debit changed the shadow
        await review(ledger, ReviewReason.SWEEP_CHANGED, subject)
    return result

"""Reversals (0400/0401) and voids (0200, 60.1 = 23) of medical settlements.

A reversal comes when the POS got no answer before the card was debited: it cancels the
approval and releases the bill's reservation — and so it is safe to apply before, without or
after its original (a reversed bill cannot be approved later). It never touches money a card
may hold: a bill already completed by a card debit is not reversed but put to review, and a
reversal of a load only flags the load — the card's counter proves what happened.

A void comes after the card was debited: the pooled share goes back to the pooled fund and
the personal-account share to the personal fund (not to the card); self-pay the card paid from
its EP is refunded to the cardholder's savings account through the refund file.
"""

from __future__ import annotations

import asyncio

from ledger import events as ev
from ledger.medical.bills import BillState, BillStateError
from ledger.medical.refusals import MedicalError
from messages.outcome import Outcome
from messages.terminal import Reversal, TerminalReply, Void
from routing.common import answer, bill_data, note
from routing.context import RequestContext

SETTLEMENT, VOID, LOADS = "22", "23", frozenset({"45", "46", "47"})


async def handle_reversal(request: Reversal, context: RequestContext) -> TerminalReply:
    if request.txn_type in LOADS:
        await note(
            context,
            "load_reversal",
            f"reversal|{context.message_key}",
            request.amount_fen or 0,
            "a load's reversal: the card's counter decides",
        )
        return answer(request, context, Outcome.APPROVED)
    bill = await bill_data(context, request.bill)
    medical = context.medical
    if request.txn_type != SETTLEMENT or bill is None or medical is None:
        return answer(request, context, Outcome.ORIGINAL_NOT_FOUND)
    assert bill.bill_id is not None
    try:
        record = await asyncio.to_thread(
            medical.bill_for, context.terminal.institution_id, bill.bill_id
        )
        if record.state is BillState.COMPLETED:  # the card has paid: that is a void's job
            await note(
                context,
                "reversal_after_debit",
                f"bill|{bill.bill_id}",
                record.split.total_fen,
                "reversal of a bill the card already paid",
            )
            return answer(request, context, Outcome.APPROVED)
        await asyncio.to_thread(medical.reverse_bill, bill.bill_id, context.now)
    except MedicalError:
        return answer(request, context, Outcome.ORIGINAL_NOT_FOUND)
    except BillStateError:
        pass  # cancelled, expired or reversed already: nothing is reserved any more
    return answer(request, context, Outcome.APPROVED)


async def handle_void(request: Void, context: RequestContext) -> TerminalReply:
    bill = await bill_data(context, request.bill)
    medical = context.medical
    if bill is None or medical is None:
        reason = "format: field 63 absent or not readable under the TDK"
        return answer(request, context, Outcome.ORIGINAL_NOT_FOUND, reason=reason)
    assert bill.bill_id is not None
    bill_id = bill.bill_id
    try:
        record = await asyncio.to_thread(medical.bill_for, context.terminal.institution_id, bill_id)
    except MedicalError:
        return answer(
            request, context, Outcome.ORIGINAL_NOT_FOUND, reason="bill_not_found", bill_id=bill_id
        )
    if record.card_no != request.pan or record.split.total_fen != request.amount_fen:
        reason = "void_card_mismatch" if record.card_no != request.pan else "void_amount_mismatch"
        return answer(request, context, Outcome.INVALID_TRANSACTION, reason=reason, bill_id=bill_id)
    completed = record.state in (BillState.COMPLETED, BillState.VOIDED)
    cardholder = context.cards.get(request.pan)
    if completed and cardholder is not None:
        ep_fen = min(bill.ep_fen or 0, record.split.self_pay_fen)
        personal = record.split.personal_account_fen
        # The card's ED paid the personal share — unless the terminal says it paid less (the
        # bill was closed with it in cash): the fund gets back what the card paid, no more.
        ed_fen = personal if bill.ed_fen is None else min(bill.ed_fen, personal)
        void = ev.Void(
            record.bill_id,
            record.institution_id,
            cardholder.cardholder_id,
            record.split.pooled_fen,
            ed_fen,
            ep_fen,
        )
        result = await ev.post_void(context.ledger, void)
        if not result.ok:
            return answer(request, context, Outcome.SYSTEM_FAULT)
        if ed_fen != personal:
            await note(
                context,
                "void_ed_as_reported",
                f"void|{record.bill_id}",
                personal - ed_fen,
                "personal share refunded to the fund as the terminal reported the card paid it:"
                " the rest was paid in cash",
            )
        if ep_fen:
            await note(
                context,
                "void_ep_refund",
                f"void|{record.bill_id}",
                ep_fen,
                "EP self-pay refunded as the terminal reported it: check its debit",
            )
    try:
        await asyncio.to_thread(medical.void_bill, record.bill_id, context.now)
    except BillStateError as error:
        reason = f"bill_state: {error.state.value}"
        return answer(request, context, Outcome.INVALID_TRANSACTION, reason=reason, bill_id=bill_id)
    return answer(request, context, Outcome.APPROVED)

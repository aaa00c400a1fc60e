"""Card-debit advice (0220): the card's DEBIT FOR PURCHASE happened, and its TAC says so.

A TAC-valid debit always posts — the card has paid — once per (PSAM terminal number, PSAM
serial), whichever of this advice or the batch upload comes first, and is paid to the
institution owning the PSAM bound into the TAC. Anomalies go to review beside the posting; a
TAC that does not verify never posts and goes to review.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from hsm.interface import PurchaseRecord
from hsm.keys import KeyUsage
from hsm.pboc import TYPE_ED_PURCHASE, TYPE_EP_PURCHASE
from ledger import events as ev
from ledger.medical.bills import BillStateError
from messages.outcome import Outcome
from messages.private import Purse
from messages.terminal import DebitAdvice, TerminalReply
from routing.cardkeys import card_key
from routing.common import answer, bill_data, note
from routing.context import RequestContext

_PURSES = {TYPE_ED_PURCHASE: (Purse.ED, ev.Purse.ED), TYPE_EP_PURCHASE: (Purse.EP, ev.Purse.EP)}


async def handle_debit_advice(request: DebitAdvice, context: RequestContext) -> TerminalReply:
    data = request.card
    card = context.cards.get(request.pan)
    purses = _PURSES.get(data.pboc_type or 0)
    if (
        card is None
        or purses is None
        or data.purse is not purses[0]
        or data.tac is None
        or data.psam_terminal is None
        or data.psam_serial is None
        or data.card_datetime is None
        or data.app_serial != card.serial_bytes
    ):
        return answer(request, context, Outcome.FORMAT_ERROR if card else Outcome.INVALID_CARD)
    when = datetime.strptime(data.card_datetime, "%Y%m%d%H%M%S")
    record = PurchaseRecord(
        data.pboc_type or 0, request.amount_fen, data.psam_terminal, data.psam_serial, when
    )
    psam_no = data.psam_terminal.hex()
    subject = f"card-debit|{psam_no}|{data.psam_serial}"
    if not await context.hsm.verify_purchase_tac(card_key(KeyUsage.MK_TAC, card), record, data.tac):
        await note(
            context,
            "bad_tac",
            subject,
            request.amount_fen,
            "card-debit advice whose TAC does not verify",
        )
        return answer(request, context, Outcome.SECURITY_FAILURE)
    owner = context.cards.psam_institution(psam_no) or "unknown"
    bill = await bill_data(context, request.bill)
    bill_id = bill.bill_id if bill is not None else None
    debit = ev.CardDebit(
        psam_no,
        data.psam_serial,
        card.application_serial,
        purses[1],
        request.amount_fen,
        owner,
        context.terminal.institution_id,
        bill_id,
    )
    result = await ev.post_card_debit(context.ledger, debit)
    if result.ok and bill_id is not None and purses[1] is ev.Purse.ED:
        result = await complete_bill(context, bill_id, request.amount_fen)
    return answer(request, context, Outcome.APPROVED if result.ok else Outcome.SYSTEM_FAULT)


async def complete_bill(context: RequestContext, bill_id: str, ed_fen: int) -> ev.EventResult:
    """The card paid the bill's personal-account share from its ED: the bill completes — the
    pooled share is owed to the institution and the accumulators are committed — once, however
    often or in whatever order its advices come. (Self-pay from the EP or in cash is the
    cardholder's own money, paid by its own debit; it does not hold the bill open.)"""
    medical = context.medical
    record = await asyncio.to_thread(medical.get_bill, bill_id) if medical else None
    if medical is None or record is None or record.split.personal_account_fen != ed_fen:
        return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
    try:
        completed, _ = await asyncio.to_thread(medical.complete_bill, bill_id, context.now)
    except BillStateError:  # reversed or voided meanwhile: its debit is in the ledger, in review
        return ev.EventResult(ev.Outcome.NOTHING_TO_POST)
    completion = ev.BillCompletion(bill_id, completed.institution_id, completed.split.pooled_fen)
    return await ev.post_bill_completion(context.ledger, completion)

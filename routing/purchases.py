"""Card-debit advice (0220): the card's DEBIT FOR PURCHASE happened, and its TAC says so.

A TAC-valid debit always posts — the card has paid — once per (PSAM terminal number, PSAM
serial), whichever of this advice or the batch upload comes first, and is paid to the
institution owning the PSAM bound into the TAC. Anomalies go to review beside the posting; a
TAC that does not verify never posts and goes to review.
"""

from __future__ import annotations

from datetime import datetime

from hsm.interface import PurchaseRecord
from hsm.keys import KeyUsage
from hsm.pboc import TYPE_ED_PURCHASE, TYPE_EP_PURCHASE
from ledger import events as ev
from ledger.core import ReviewItem, transfer_id
from messages.outcome import Outcome
from messages.private import Purse
from messages.terminal import DebitAdvice, TerminalReply
from messages.terminal_table import reply_to
from routing.cardkeys import card_key
from routing.context import RequestContext

_PURSES = {TYPE_ED_PURCHASE: (Purse.ED, ev.Purse.ED), TYPE_EP_PURCHASE: (Purse.EP, ev.Purse.EP)}


def _answer(request: DebitAdvice, context: RequestContext, outcome: Outcome) -> TerminalReply:
    return reply_to(
        request,
        outcome.code,
        host_time=context.host_time,
        host_date=context.host_date,
        amount_fen=request.amount_fen,
    )


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
        return _answer(request, context, Outcome.FORMAT_ERROR if card else Outcome.INVALID_CARD)
    when = datetime.strptime(data.card_datetime, "%Y%m%d%H%M%S")
    record = PurchaseRecord(
        data.pboc_type or 0, request.amount_fen, data.psam_terminal, data.psam_serial, when
    )
    psam_no = data.psam_terminal.hex()
    subject = f"card-debit|{psam_no}|{data.psam_serial}"
    if not await context.hsm.verify_purchase_tac(card_key(KeyUsage.MK_TAC, card), record, data.tac):
        item = ReviewItem(
            transfer_id("review", "bad_tac", subject),
            "bad_tac",
            subject,
            request.amount_fen,
            "card-debit advice whose TAC does not verify",
        )
        await context.ledger.add_review(item)
        return _answer(request, context, Outcome.SECURITY_FAILURE)
    owner = context.cards.psam_institution(psam_no) or "unknown"
    debit = ev.CardDebit(
        psam_no,
        data.psam_serial,
        card.application_serial,
        purses[1],
        request.amount_fen,
        owner,
        context.terminal.institution_id,
    )
    result = await ev.post_card_debit(context.ledger, debit)
    return _answer(request, context, Outcome.APPROVED if result.ok else Outcome.SYSTEM_FAULT)

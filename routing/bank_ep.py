"""EP load 圈存 from the cardholder's savings account at a bank counter (DESIGN §5's EP rows).

The card's MAC1 first (it authenticates the card and binds the amount); then the PIN, entered at
the counter under the inbound link's ZPK, translated in the HSM to the outbound link's ZPK, and
the savings debit authorised by the bank over the outbound link — forwarded with the counter's
F32, F7 and F11, so a reversal can name it; approved: bank clearing → EP loads in doubt, MAC2.
Declined: the bank's code, nothing moves. No answer in time: 98, and a reversal of the debit is
queued for store-and-forward (the bank may have debited; the card was never credited).
"""

from __future__ import annotations

from hsm.keys import KeyUsage
from ledger import events as ev
from ledger.core import QueuedReversal, transfer_id
from messages.bank import BankReply, CounterLoad, SavingsDebit
from messages.outcome import Outcome
from messages.private import CardData
from messages.private import Purse as CardPurse
from routing import loads
from routing.bank_context import TIMED_OUT, BankContext
from routing.bank_counter import bank_answer
from routing.cardkeys import card_key

SAVINGS_ACCOUNT = "10"  # F3 digits 3-4: the source account


async def handle_counter_ep_load(request: CounterLoad, context: BankContext) -> BankReply:
    base = context.base
    card, refused = await loads.card_for(base, request.pan, request.card)
    if card is None:
        outcome, data = refused or (Outcome.INVALID_CARD, None)
        return bank_answer(request, context, outcome, card=data)
    txn = loads.card_online_txn(request.card, request.amount_fen, loads.EP_LOAD, CardPurse.EP)
    if txn is None or request.card.app_serial != card.serial_bytes:
        outcome = Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD
        return bank_answer(request, context, outcome)
    if context.savings is None or context.zpk_in is None or context.zpk_out is None:
        return bank_answer(request, context, Outcome.ISSUER_INOPERATIVE)
    if request.pin_block is None:
        return bank_answer(request, context, Outcome.PIN_FORMAT_ERROR)
    key = card_key(KeyUsage.MK_LOAD, card)
    if not await base.hsm.verify_mac1(key, txn):
        return bank_answer(request, context, Outcome.SECURITY_FAILURE)
    pin_block = await base.hsm.translate_pin(
        context.zpk_in, context.zpk_out, request.pin_block, request.pan
    )
    debit = SavingsDebit(
        stan=request.stan,
        transmitted=request.transmitted,
        acquirer_id=request.acquirer_id,
        terminal_id=request.terminal_id,
        branch_id=request.branch_id,
        pan=request.pan,
        amount_fen=request.amount_fen,
        pin_block=pin_block,
    )
    attempt = ev.load(
        base.message_key,
        txn.rnd.hex(),
        card.application_serial,
        ev.Purse.EP,
        txn.online_ctr,
        txn.amount_fen,
        context.bank_id,
    )
    code = await context.savings.debit(debit)
    if code == TIMED_OUT:
        reversal = QueuedReversal(
            transfer_id("savings-timeout", base.message_key),
            context.bank_id,
            attempt.reference,
            request.amount_fen,
        )
        await base.ledger.queue_reversal(reversal)
        return bank_answer(request, context, Outcome.ISSUER_TIMEOUT)
    if code != Outcome.APPROVED.code:
        return bank_answer(request, context, Outcome.from_code(code))
    posted = await ev.post_into_doubt(base.ledger, attempt)
    if not posted.ok:
        return bank_answer(request, context, Outcome.SYSTEM_FAULT)
    mac2 = await base.hsm.generate_mac2(key, txn, base.now)
    data = CardData(mac2=mac2, card_datetime=base.now.strftime("%Y%m%d%H%M%S"))
    return bank_answer(request, context, Outcome.APPROVED, card=data)


async def handle_counter_ep_load_confirm(request: CounterLoad, context: BankContext) -> BankReply:
    outcome, data = await loads.ep_load_confirm(
        context.base, request.pan, request.amount_fen, request.card
    )
    return bank_answer(request, context, outcome, card=data)

"""EP load 圈存 from the cardholder's savings account (DESIGN §5's EP rows), wherever the card is:
at a bank counter (the inbound bank link) or at a kiosk (the terminal interface). One core:

the card's MAC1 first (it authenticates the card and binds the amount); then the PIN — entered
under the counter's ZPK or the kiosk's PIK — translated in the HSM to the bank's ZPK, and the
savings debit authorised by the bank over the outbound link; approved: bank clearing → EP loads
in doubt, MAC2; the TAC then resolves it (:func:`routing.loads.ep_load_confirm`). Declined: the
bank's code, nothing moves. No answer in time: 98, and a reversal of the debit is queued for
store-and-forward (the bank may have debited; the card was never credited).

The debit's envelope names it on the bank link, and the attempt's message key is that name
(``bank|F32|F7|F11|0200``), so a reversal — queued at a timeout here, or by the ledger when the
card proves the load did not happen — can name its original in F90. A counter's debit is
forwarded with the counter's F32, F7 and F11; a kiosk's gets the centre's F32 and the link's
next F11 with the host's F7.
"""

from __future__ import annotations

from dataclasses import dataclass

from hsm.errors import PinBlockError
from hsm.keys import KeyRef, KeyUsage
from ledger import events as ev
from ledger.core import QueuedReversal, transfer_id
from messages.bank import BankReply, CounterLoad, SavingsDebit
from messages.outcome import Outcome
from messages.private import CardData
from messages.private import Purse as CardPurse
from messages.terminal import EpLoad, EpLoadConfirm, TerminalReply
from routing import loads
from routing.bank_context import TIMED_OUT, BankContext, SavingsLink
from routing.bank_counter import bank_answer
from routing.cardkeys import card_key
from routing.common import answer
from routing.context import RequestContext
from routing.table import Handler

SAVINGS_ACCOUNT = "10"  # F3 digits 3-4: the source account


@dataclass(frozen=True, slots=True)
class DebitEnvelope:
    """How the savings debit is named on the bank link."""

    stan: str
    transmitted: str
    acquirer_id: str
    terminal_id: str | None = None
    branch_id: str | None = None

    @property
    def message_key(self) -> str:
        return f"bank|{self.acquirer_id}|{self.transmitted}|{self.stan}|0200"


@dataclass(frozen=True, slots=True)
class SavingsLoad:
    """What one EP load from savings needs besides the card data."""

    pan: str
    amount_fen: int
    pin_block: bytes | None
    pin_key: KeyRef | None  # the key the PIN block arrived under (counter ZPK, kiosk PIK)
    envelope: DebitEnvelope


async def savings_load(
    base: RequestContext, data: CardData, load: SavingsLoad, issuer: SavingsLink | None
) -> loads.CardResult:
    """MAC1 → PIN translated → the bank's debit → EP loads in doubt → MAC2."""
    card, refused = await loads.card_for(base, load.pan, data)
    if card is None:
        return refused or (Outcome.INVALID_CARD, None)
    txn = loads.card_online_txn(data, load.amount_fen, loads.EP_LOAD, CardPurse.EP)
    if txn is None or data.app_serial != card.serial_bytes:
        return (Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD), None
    if issuer is None:
        return Outcome.ISSUER_INOPERATIVE, None
    if load.pin_block is None or load.pin_key is None:
        return Outcome.PIN_FORMAT_ERROR, None
    zpk = await issuer.pin_key()
    if zpk is None:
        return Outcome.ISSUER_INOPERATIVE, None
    key = card_key(KeyUsage.MK_LOAD, card)
    if not await base.hsm.verify_mac1(key, txn):
        return Outcome.SECURITY_FAILURE, None
    try:
        pin_block = await base.hsm.translate_pin(load.pin_key, zpk, load.pin_block, load.pan)
    except PinBlockError:
        return Outcome.PIN_FORMAT_ERROR, None
    serial = card.application_serial
    await ev.check_chip_balance(
        base.ledger, serial, ev.Purse.EP, txn.old_balance_fen, txn.online_ctr, txn.rnd.hex()
    )
    envelope = load.envelope
    attempt = ev.load(
        envelope.message_key,
        txn.rnd.hex(),
        serial,
        ev.Purse.EP,
        txn.online_ctr,
        txn.amount_fen,
        issuer.bank_id,
    )
    debit = SavingsDebit(
        stan=envelope.stan,
        transmitted=envelope.transmitted,
        acquirer_id=envelope.acquirer_id,
        terminal_id=envelope.terminal_id,
        branch_id=envelope.branch_id,
        pan=load.pan,
        amount_fen=load.amount_fen,
        pin_block=pin_block,
    )
    code = await issuer.debit(debit)
    if code == TIMED_OUT:
        await _queue_reversal(base, attempt, "savings-timeout")
        return Outcome.ISSUER_TIMEOUT, None
    if code != Outcome.APPROVED.code:
        return Outcome.from_code(code), None
    posted = await ev.post_into_doubt(base.ledger, attempt)
    if not posted.ok:  # the bank debited, the card gets nothing: give the money back
        await _queue_reversal(base, attempt, "savings-unposted")
        return Outcome.SYSTEM_FAULT, None
    mac2 = await base.hsm.generate_mac2(key, txn, base.now)
    return Outcome.APPROVED, CardData(mac2=mac2, card_datetime=base.now.strftime("%Y%m%d%H%M%S"))


async def _queue_reversal(base: RequestContext, attempt: ev.Attempt, why: str) -> None:
    reversal = QueuedReversal(
        transfer_id(why, attempt.message_key), attempt.party, attempt.reference, attempt.amount_fen
    )
    await base.ledger.queue_reversal(reversal)


# -- at a bank counter (the inbound bank link) -------------------------------------------------


async def handle_counter_ep_load(request: CounterLoad, context: BankContext) -> BankReply:
    envelope = DebitEnvelope(
        request.stan,
        request.transmitted,
        request.acquirer_id,
        request.terminal_id,
        request.branch_id,
    )
    load = SavingsLoad(
        request.pan, request.amount_fen, request.pin_block, context.zpk_in, envelope
    )
    outcome, data = await savings_load(context.base, request.card, load, context.savings)
    return bank_answer(request, context, outcome, card=data)


async def handle_counter_ep_load_confirm(request: CounterLoad, context: BankContext) -> BankReply:
    outcome, data = await loads.ep_load_confirm(
        context.base, request.pan, request.amount_fen, request.card
    )
    return bank_answer(request, context, outcome, card=data)


# -- at a kiosk (the terminal interface) -------------------------------------------------------


async def handle_kiosk_ep_load(
    request: EpLoad, context: RequestContext, issuer: SavingsLink | None
) -> TerminalReply:
    """0200 F3 601000, 60.1 = 46: the bank PIN in F52 under the kiosk's session PIK."""
    if issuer is None:
        return answer(request, context, Outcome.NO_ROUTE)
    if context.terminal.kind != "kiosk":  # a POS takes payments, it does not load purses
        return answer(request, context, Outcome.NOT_PERMITTED_TERMINAL)
    pik = context.session.pik if context.session is not None else None
    link = await issuer.envelope()
    envelope = DebitEnvelope(
        link["stan"],
        link["transmitted"],
        link["acquirer_id"],
        context.terminal.terminal_id[:8].ljust(8),
        context.terminal.institution_id[:15].ljust(15),
    )
    load = SavingsLoad(request.pan, request.amount_fen, request.pin_block, pik, envelope)
    outcome, data = await savings_load(context, request.card, load, issuer)
    return answer(request, context, outcome, card=data)


async def handle_kiosk_ep_load_confirm(
    request: EpLoadConfirm, context: RequestContext
) -> TerminalReply:
    """0220 F3 601000: the card's TAC (or its GET TRANSACTION PROVE): in doubt → EP shadow."""
    outcome, data = await loads.ep_load_confirm(
        context, request.pan, request.amount_fen, request.card
    )
    return answer(request, context, outcome, card=data)


def kiosk_ep_load_via(issuer: SavingsLink | None, bank_id: str) -> Handler:
    """The kiosk EP load bound to one bank's savings link (a route per BIN range)."""

    async def handle(request: EpLoad, context: RequestContext) -> TerminalReply:
        if issuer is None and bank_id:  # configured, but its outbound link never came up
            return answer(request, context, Outcome.ISSUER_INOPERATIVE)
        return await handle_kiosk_ep_load(request, context, issuer)

    handle.__qualname__ = f"handle_kiosk_ep_load[bank {bank_id}]" if bank_id else "no_bank_route"
    return handle

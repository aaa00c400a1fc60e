"""ED load 圈存 at a kiosk: MAC1 in, the personal fund into doubt, MAC2 out; then the TAC.

The card is the authority for the money on it (DESIGN §5): a load in doubt is resolved only by
the card — its TAC, or the online counter it shows under the next verified MAC1 — never by a
terminal's word alone. A GET TRANSACTION PROVE "not happened" (9406) is noted and waits for the
counter.
"""

from __future__ import annotations

from datetime import datetime

from hsm.interface import OnlineTxn
from hsm.keys import KeyUsage
from ledger import events as ev
from messages.outcome import Outcome
from messages.private import CardData, Prove
from messages.private import Purse as CardPurse
from messages.terminal import EdLoad, EdLoadConfirm, TerminalReply
from routing.cardkeys import card_key
from routing.common import answer, note
from routing.context import CardRecord, RequestContext

ED_LOAD = 0x01  # PBOC transaction type of an ED load


def _answer(
    request: EdLoad, context: RequestContext, outcome: Outcome, card: CardData | None = None
) -> TerminalReply:
    return answer(request, context, outcome, card=card)


def card_refusal(card: CardRecord | None, now: datetime) -> Outcome | None:
    """Why this card may not take an online transaction now, or ``None``."""
    if card is None:
        return Outcome.INVALID_CARD
    if card.status == "lost":
        return Outcome.LOST_CARD
    if card.status != "active":
        return Outcome.RESTRICTED_CARD
    if card.expiry < now.date():
        return Outcome.EXPIRED_CARD
    return None


def online_txn(request: EdLoad) -> OnlineTxn | None:
    """The card's INITIALIZE FOR LOAD data as the HSM needs it; ``None`` if incomplete."""
    data = request.card
    if (
        data.purse is not CardPurse.ED
        or data.old_balance_fen is None
        or data.online_counter is None
        or data.card_random is None
        or data.psam_terminal is None
        or data.mac1 is None
    ):
        return None
    return OnlineTxn(
        ED_LOAD,
        data.old_balance_fen,
        request.amount_fen,
        data.online_counter,
        data.card_random,
        data.psam_terminal,
        data.mac1,
    )


APPLICATION_BLOCK_TEMPORARY = bytes.fromhex("841E000004")


async def block_script(
    context: RequestContext, card: CardRecord, challenge: bytes | None
) -> CardData | None:
    """For a card reported lost: a temporary APPLICATION BLOCK (P2 = 00) the terminal sends to
    the card, MACed by the HSM under the card's DAMK with the card's GET CHALLENGE value."""
    if challenge is None:
        return None
    mac = await context.hsm.script_mac(
        card_key(KeyUsage.MK_APP_MAINT, card), challenge, APPLICATION_BLOCK_TEMPORARY
    )
    return CardData(issuer_script=APPLICATION_BLOCK_TEMPORARY + mac)


async def handle_ed_load(request: EdLoad, context: RequestContext) -> TerminalReply:
    card = context.cards.get(request.pan)
    refusal = card_refusal(card, context.now)
    if refusal is Outcome.LOST_CARD and card is not None:
        script = await block_script(context, card, request.card.challenge)
        return _answer(request, context, Outcome.LOST_CARD, script)
    if refusal is not None or card is None:
        return _answer(request, context, refusal or Outcome.INVALID_CARD)
    txn = online_txn(request)
    if txn is None or request.card.app_serial != card.serial_bytes:
        return _answer(
            request, context, Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD
        )
    key = card_key(KeyUsage.MK_LOAD, card)
    if not await context.hsm.verify_mac1(key, txn):
        return _answer(request, context, Outcome.SECURITY_FAILURE)
    serial = card.application_serial
    await ev.check_chip_balance(
        context.ledger,
        serial,
        ev.Purse.ED,
        txn.old_balance_fen,
        txn.online_ctr,
        card_random=txn.rnd.hex(),  # so a retry after a torn load settles the torn one now
    )
    attempt = ev.load(
        context.message_key,
        txn.rnd.hex(),
        serial,
        ev.Purse.ED,
        txn.online_ctr,
        txn.amount_fen,
        card.cardholder_id,
    )
    posted = await ev.post_into_doubt(context.ledger, attempt)
    if posted.outcome is ev.Outcome.INSUFFICIENT_FUNDS:
        return _answer(request, context, Outcome.INSUFFICIENT_FUNDS)
    if posted.outcome is ev.Outcome.CONFLICT:  # proven not to have happened meanwhile: in review
        return _answer(request, context, Outcome.DUPLICATE)
    if not posted.ok:
        return _answer(request, context, Outcome.SYSTEM_FAULT)
    mac2 = await context.hsm.generate_mac2(key, txn, context.now)
    answer = CardData(mac2=mac2, card_datetime=context.now.strftime("%Y%m%d%H%M%S"))
    return _answer(request, context, Outcome.APPROVED, answer)


async def handle_ed_load_confirm(request: EdLoadConfirm, context: RequestContext) -> TerminalReply:
    card = context.cards.get(request.pan)
    txn = online_txn(request)
    data = request.card
    if card is None or txn is None or data.app_serial != card.serial_bytes:
        return _answer(
            request, context, Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD
        )
    serial = card.application_serial
    attempts = [
        a
        for a in await ev.open_attempts(context.ledger, serial, ev.Purse.ED)
        if a.online_counter == txn.online_ctr and a.card_random == txn.rnd.hex()
    ]
    if not attempts:
        return _answer(request, context, Outcome.APPROVED)  # resolved before: nothing to do
    if data.tac is None or data.new_balance_fen is None or data.card_datetime is None:
        # 9406 reported, or no TAC: the terminal's word is noted, the counter will decide.
        if data.prove is Prove.NOT_HAPPENED:
            await note(
                context,
                "load_not_happened",
                f"load-not-happened|{attempts[0].reference}",
                txn.amount_fen,
                "terminal reports GET TRANSACTION PROVE 9406",
            )
        return _answer(request, context, Outcome.APPROVED)
    when = datetime.strptime(data.card_datetime, "%Y%m%d%H%M%S")
    tac_key = card_key(KeyUsage.MK_TAC, card)
    if not await context.hsm.verify_load_tac(tac_key, txn, data.new_balance_fen, when, data.tac):
        await note(
            context,
            "bad_tac",
            f"load|{attempts[0].reference}",
            txn.amount_fen,
            "load confirmation with a TAC that does not verify",
        )
        return _answer(request, context, Outcome.SECURITY_FAILURE)
    result = await ev.resolve_attempt(context.ledger, attempts[0], happened=True)
    return _answer(request, context, Outcome.APPROVED if result.ok else Outcome.SYSTEM_FAULT)

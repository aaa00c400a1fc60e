"""ED load 圈存 and unload 圈提: MAC1 in, the money into doubt, MAC2 out; then the TAC or MAC3.

One core serves every place a card is loaded or unloaded online — a kiosk (terminal field 58)
and a bank counter (bank field 122) — so the same card data give the same HSM checks and the
same ledger postings wherever the card is. The ``handle_*`` functions here are the terminal
interface's; ``routing/bank_counter.py`` wraps the same cores for the bank link.

The card is the authority for the money on it (DESIGN §5): a load or unload in doubt is resolved
only by the card — its TAC or MAC3, or the online counter it shows under the next verified MAC1
— never by a terminal's word alone. A GET TRANSACTION PROVE "not happened" (9406) is noted and
waits for the counter.

The card's application block follows the centre's card status at its next online contact: a
card reported lost gets a temporary APPLICATION BLOCK (answered 41); an active card that asks
with a challenge but no INITIALIZE data (its application refused INITIALIZE: it is still
blocked after an unloss) gets APPLICATION UNBLOCK (answered 62), and the terminal loads again.
"""

from __future__ import annotations

from datetime import datetime

from hsm import pboc
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

ED_LOAD = pboc.TYPE_ED_LOAD  # PBOC transaction type of an ED load
ED_UNLOAD = pboc.TYPE_ED_UNLOAD
EP_LOAD = pboc.TYPE_EP_LOAD
_LEDGER_PURSE = {CardPurse.ED: ev.Purse.ED, CardPurse.EP: ev.Purse.EP}

# What a core returns: the outcome and the card data for the reply (MAC2, a script), if any.
CardResult = tuple[Outcome, CardData | None]


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


def card_online_txn(
    data: CardData, amount_fen: int, txn_type: int, purse: CardPurse = CardPurse.ED
) -> OnlineTxn | None:
    """The card's INITIALIZE FOR LOAD / UNLOAD data as the HSM needs it; ``None`` if incomplete."""
    if (
        data.purse is not purse
        or data.old_balance_fen is None
        or data.online_counter is None
        or data.card_random is None
        or data.psam_terminal is None
        or data.mac1 is None
    ):
        return None
    return OnlineTxn(
        txn_type,
        data.old_balance_fen,
        amount_fen,
        data.online_counter,
        data.card_random,
        data.psam_terminal,
        data.mac1,
    )


def online_txn(request: EdLoad) -> OnlineTxn | None:
    """An ED load request's INITIALIZE FOR LOAD data; ``None`` if incomplete."""
    return card_online_txn(request.card, request.amount_fen, ED_LOAD)


APPLICATION_BLOCK_TEMPORARY = bytes.fromhex("841E000004")
APPLICATION_UNBLOCK = bytes.fromhex("8418000004")


async def _script(
    context: RequestContext, card: CardRecord, challenge: bytes | None, command: bytes
) -> CardData | None:
    if challenge is None:
        return None
    mac = await context.hsm.script_mac(card_key(KeyUsage.MK_APP_MAINT, card), challenge, command)
    return CardData(issuer_script=command + mac)


async def block_script(
    context: RequestContext, card: CardRecord, challenge: bytes | None
) -> CardData | None:
    """For a card reported lost: a temporary APPLICATION BLOCK (P2 = 00) the terminal sends to
    the card, MACed by the HSM under the card's DAMK with the card's GET CHALLENGE value."""
    return await _script(context, card, challenge, APPLICATION_BLOCK_TEMPORARY)


async def unblock_script(
    context: RequestContext, card: CardRecord, challenge: bytes | None
) -> CardData | None:
    """For an active card whose application is still blocked (lost, then unlost)."""
    return await _script(context, card, challenge, APPLICATION_UNBLOCK)


def _asks_for_unblock(data: CardData, card: CardRecord) -> bool:
    """Card data with the card's serial and a challenge but no INITIALIZE response."""
    return (
        data.challenge is not None
        and data.app_serial == card.serial_bytes
        and data.mac1 is None
        and data.card_random is None
    )


async def card_for(
    context: RequestContext, pan: str, data: CardData
) -> tuple[CardRecord | None, CardResult | None]:
    """The card, or the answer that refuses it (a lost card's block, an unlost card's unblock)."""
    card = context.cards.get(pan)
    refusal = card_refusal(card, context.now)
    if refusal is Outcome.LOST_CARD and card is not None:
        return None, (Outcome.LOST_CARD, await block_script(context, card, data.challenge))
    if refusal is not None or card is None:
        return None, (refusal or Outcome.INVALID_CARD, None)
    if _asks_for_unblock(data, card):
        script = await unblock_script(context, card, data.challenge)
        return None, (Outcome.RESTRICTED_CARD, script)
    return card, None


async def ed_load(context: RequestContext, pan: str, amount_fen: int, data: CardData) -> CardResult:
    """MAC1 verified → personal fund into doubt → MAC2 (wherever the card is)."""
    card, refused = await card_for(context, pan, data)
    if card is None:
        return refused or (Outcome.INVALID_CARD, None)
    txn = card_online_txn(data, amount_fen, ED_LOAD)
    if txn is None or data.app_serial != card.serial_bytes:
        return (Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD), None
    key = card_key(KeyUsage.MK_LOAD, card)
    if not await context.hsm.verify_mac1(key, txn):
        return Outcome.SECURITY_FAILURE, None
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
        return Outcome.INSUFFICIENT_FUNDS, None
    if posted.outcome is ev.Outcome.CONFLICT:  # proven not to have happened meanwhile: in review
        return Outcome.DUPLICATE, None
    if not posted.ok:
        return Outcome.SYSTEM_FAULT, None
    mac2 = await context.hsm.generate_mac2(key, txn, context.now)
    return Outcome.APPROVED, CardData(mac2=mac2, card_datetime=context.now.strftime("%Y%m%d%H%M%S"))


async def ed_unload(
    context: RequestContext, pan: str, amount_fen: int, data: CardData
) -> CardResult:
    """MAC1 (under the unload key) verified → card ED shadow into doubt → MAC2."""
    card, refused = await card_for(context, pan, data)
    if card is None:
        return refused or (Outcome.INVALID_CARD, None)
    txn = card_online_txn(data, amount_fen, ED_UNLOAD)
    if txn is None or data.app_serial != card.serial_bytes:
        return (Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD), None
    if amount_fen <= 0 or amount_fen > txn.old_balance_fen:
        return Outcome.INSUFFICIENT_FUNDS, None  # the card would refuse it anyway (9401)
    key = card_key(KeyUsage.MK_UNLOAD, card)
    if not await context.hsm.verify_mac1(key, txn):
        return Outcome.SECURITY_FAILURE, None
    serial = card.application_serial
    await ev.check_chip_balance(
        context.ledger,
        serial,
        ev.Purse.ED,
        txn.old_balance_fen,
        txn.online_ctr,
        card_random=txn.rnd.hex(),
    )
    attempt = ev.unload(
        context.message_key, txn.rnd.hex(), serial, txn.online_ctr, amount_fen, card.cardholder_id
    )
    posted = await ev.post_into_doubt(context.ledger, attempt)
    if posted.outcome is ev.Outcome.CONFLICT:
        return Outcome.DUPLICATE, None
    if not posted.ok:
        return Outcome.SYSTEM_FAULT, None
    mac2 = await context.hsm.generate_mac2(key, txn, context.now)
    return Outcome.APPROVED, CardData(mac2=mac2, card_datetime=context.now.strftime("%Y%m%d%H%M%S"))


async def ed_load_confirm(
    context: RequestContext, pan: str, amount_fen: int, data: CardData
) -> CardResult:
    """The load's TAC (or the terminal's proof report): the attempt resolved, once."""
    return await _confirm(context, pan, amount_fen, data, unload=False)


async def ed_unload_confirm(
    context: RequestContext, pan: str, amount_fen: int, data: CardData
) -> CardResult:
    """The unload's MAC3 (or the terminal's proof report): to the personal fund, once."""
    return await _confirm(context, pan, amount_fen, data, unload=True)


async def ep_load_confirm(
    context: RequestContext, pan: str, amount_fen: int, data: CardData
) -> CardResult:
    """An EP load's TAC (the savings-funded load): loads in doubt → card EP shadow, once."""
    return await _confirm(context, pan, amount_fen, data, unload=False, purse=CardPurse.EP)


async def _confirm(
    context: RequestContext,
    pan: str,
    amount_fen: int,
    data: CardData,
    *,
    unload: bool,
    purse: CardPurse = CardPurse.ED,
) -> CardResult:
    card = context.cards.get(pan)
    txn_type = ED_UNLOAD if unload else (EP_LOAD if purse is CardPurse.EP else ED_LOAD)
    txn = card_online_txn(data, amount_fen, txn_type, purse)
    if card is None or txn is None or data.app_serial != card.serial_bytes:
        return (Outcome.FORMAT_ERROR if txn is None else Outcome.INVALID_CARD), None
    serial = card.application_serial
    attempts = [
        a
        for a in await ev.open_attempts(context.ledger, serial, _LEDGER_PURSE[purse])
        if a.online_counter == txn.online_ctr
        and a.card_random == txn.rnd.hex()
        and a.unload == unload
    ]
    if not attempts:
        return Outcome.APPROVED, None  # resolved before: nothing to do
    proof = data.mac3 if unload else data.tac
    op = "unload" if unload else "load"
    if proof is None or data.new_balance_fen is None or data.card_datetime is None:
        # 9406 reported, or no TAC/MAC3: the terminal's word is noted, the counter will decide.
        if data.prove is Prove.NOT_HAPPENED:
            await note(
                context,
                f"{op}_not_happened",
                f"{op}-not-happened|{attempts[0].reference}",
                txn.amount_fen,
                "terminal reports GET TRANSACTION PROVE 9406",
            )
        return Outcome.APPROVED, None
    when = datetime.strptime(data.card_datetime, "%Y%m%d%H%M%S")
    if unload:
        key = card_key(KeyUsage.MK_UNLOAD, card)
        valid = await context.hsm.verify_mac3(key, txn, data.new_balance_fen, when, proof)
    else:
        key = card_key(KeyUsage.MK_TAC, card)
        valid = await context.hsm.verify_load_tac(key, txn, data.new_balance_fen, when, proof)
    if not valid:
        await note(
            context,
            "bad_tac" if not unload else "bad_mac3",
            f"{op}|{attempts[0].reference}",
            txn.amount_fen,
            f"{op} confirmation with a {'MAC3' if unload else 'TAC'} that does not verify",
        )
        return Outcome.SECURITY_FAILURE, None
    result = await ev.resolve_attempt(context.ledger, attempts[0], happened=True)
    return (Outcome.APPROVED if result.ok else Outcome.SYSTEM_FAULT), None


async def handle_ed_load(request: EdLoad, context: RequestContext) -> TerminalReply:
    outcome, card = await ed_load(context, request.pan, request.amount_fen, request.card)
    return _answer(request, context, outcome, card)


async def handle_ed_load_confirm(request: EdLoadConfirm, context: RequestContext) -> TerminalReply:
    outcome, card = await ed_load_confirm(context, request.pan, request.amount_fen, request.card)
    return _answer(request, context, outcome, card)

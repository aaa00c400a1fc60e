"""Bank counter services on the inbound link (the bank as acquirer): link management, ED load
and unload on the card in the counter's reader (field 122, the same card data as a kiosk's
field 58, through the same cores in :mod:`routing.loads`), inquiry, loss report and unloss."""

from __future__ import annotations

from typing import Any

from hsm.keys import KeyUsage
from ledger.kinds import AccountKind, account_id
from messages.bank import (
    BankMessage,
    BankReply,
    CardService,
    CounterInquiry,
    CounterLoad,
    KeyChange,
    reply_to,
)
from messages.outcome import Outcome
from messages.private import Balance, CardData
from routing import loads
from routing.bank_context import BankContext
from routing.cardkeys import card_key
from routing.inquiry import CARD_ED, CARD_EP, PERSONAL_FUND

# Card statuses a loss report may start from (a lost card reported again is simply lost).
_REPORTABLE = ("active", "lost")


def bank_answer(
    request: BankMessage, context: BankContext, outcome: Outcome, **values: Any
) -> BankReply:
    """The reply to ``request``: its outcome, the PAN and amount echoed, and ``values``."""
    values.setdefault("amount_fen", getattr(request, "amount_fen", None))
    values.setdefault("pan", getattr(request, "pan", None))
    return reply_to(request, outcome.code, **values)


async def handle_bank_sign_on(request: BankMessage, context: BankContext) -> BankReply:
    """0800 F70 = 001: the link is signed on (the service records it on approval)."""
    return bank_answer(request, context, Outcome.APPROVED)


async def handle_bank_sign_off(request: BankMessage, context: BankContext) -> BankReply:
    return bank_answer(request, context, Outcome.APPROVED)


async def handle_bank_echo(request: BankMessage, context: BankContext) -> BankReply:
    return bank_answer(request, context, Outcome.APPROVED)


async def handle_key_change(request: KeyChange, context: BankContext) -> BankReply:
    """0800 F70 = 101 from the bank: its new zone keys under the link's ZMK, taken all or none
    (a KCV that does not match: 89, nothing changes); the answer's F48 echoes the KCVs."""
    if context.keys is None:
        return bank_answer(request, context, Outcome.FUNCTION_NOT_SUPPORTED)
    try:
        taken = await context.keys.take(request.keys, context.base.now)
    except ValueError:
        return bank_answer(request, context, Outcome.SECURITY_FAILURE)
    return bank_answer(request, context, Outcome.APPROVED, data=taken)


async def handle_counter_inquiry(request: CounterInquiry, context: BankContext) -> BankReply:
    base = context.base
    card = base.cards.get(request.pan)
    refusal = loads.card_refusal(card, base.now)
    if refusal is not None or card is None:
        return bank_answer(request, context, refusal or Outcome.INVALID_CARD)
    ids = {
        PERSONAL_FUND: account_id(AccountKind.PERSONAL_FUND, card.cardholder_id),
        CARD_ED: account_id(AccountKind.CARD_ED_SHADOW, card.application_serial),
        CARD_EP: account_id(AccountKind.CARD_EP_SHADOW, card.application_serial),
    }
    found = await base.ledger.balances(list(ids.values()))
    balances = tuple(
        Balance(kind, found[key].balance_fen if key in found else 0) for kind, key in ids.items()
    )
    return bank_answer(request, context, Outcome.APPROVED, balances=balances)


async def handle_counter_ed_load(request: CounterLoad, context: BankContext) -> BankReply:
    outcome, card = await loads.ed_load(context.base, request.pan, request.amount_fen, request.card)
    return bank_answer(request, context, outcome, card=card)


async def handle_counter_ed_load_confirm(request: CounterLoad, context: BankContext) -> BankReply:
    outcome, card = await loads.ed_load_confirm(
        context.base, request.pan, request.amount_fen, request.card
    )
    return bank_answer(request, context, outcome, card=card)


async def handle_counter_unload(request: CounterLoad, context: BankContext) -> BankReply:
    outcome, card = await loads.ed_unload(
        context.base, request.pan, request.amount_fen, request.card
    )
    return bank_answer(request, context, outcome, card=card)


async def handle_counter_unload_confirm(request: CounterLoad, context: BankContext) -> BankReply:
    outcome, card = await loads.ed_unload_confirm(
        context.base, request.pan, request.amount_fen, request.card
    )
    return bank_answer(request, context, outcome, card=card)


async def handle_loss_report(request: CardService, context: BankContext) -> BankReply:
    """挂失: no card present. The card is lost at once (refused 41 and blocked by script at its
    next online use) and on the blacklist terminals download (offline use)."""
    at_us = int(context.base.now.timestamp() * 1_000_000)
    change = await context.card_status.report_lost(request.pan, at_us)
    if change.status_before is None:
        return bank_answer(request, context, Outcome.INVALID_CARD)
    if change.status_before not in _REPORTABLE:
        return bank_answer(request, context, Outcome.RESTRICTED_CARD)
    return bank_answer(request, context, Outcome.APPROVED)


async def handle_unloss(request: CardService, context: BankContext) -> BankReply:
    """解挂: the card is active again and leaves the blacklist; its application is unblocked by
    script the next time it is online (see :mod:`routing.loads`)."""
    change = await context.card_status.unloss(request.pan)
    if change.status_before is None:
        return bank_answer(request, context, Outcome.INVALID_CARD)
    if change.status_before not in _REPORTABLE:
        return bank_answer(request, context, Outcome.RESTRICTED_CARD)
    return bank_answer(request, context, Outcome.APPROVED)


_NEW_CARD_REFUSALS = {
    "unknown": Outcome.INVALID_CARD,
    "other_holder": Outcome.NOT_PERMITTED_CARDHOLDER,
    "not_active": Outcome.RESTRICTED_CARD,
}


async def handle_cancel(request: CardService, context: BankContext) -> BankReply:
    """注销: the card (active or lost) is cancelled and blacklisted at once; its ED and EP
    shadows go back (personal fund, refunds payable) after the offline-upload grace period."""
    at_us = int(context.base.now.timestamp() * 1_000_000)
    change = await context.card_status.cancel(request.pan, at_us)
    return _ended(request, context, change.status_before, change.blacklist_version)


async def handle_card_replacement(request: CardService, context: BankContext) -> BankReply:
    """Card replacement: the new card (F102, issued to the same cardholder and on file) takes
    over; the old one is blacklisted and swept like a cancelled card."""
    if not request.new_card:
        return bank_answer(request, context, Outcome.FORMAT_ERROR)
    at_us = int(context.base.now.timestamp() * 1_000_000)
    change = await context.card_status.replace(request.pan, request.new_card, at_us)
    if change.new_card_problem:
        return bank_answer(request, context, _NEW_CARD_REFUSALS[change.new_card_problem])
    return _ended(request, context, change.status_before, change.blacklist_version)


def _ended(
    request: CardService, context: BankContext, status_before: str | None, version: int
) -> BankReply:
    if status_before is None:
        return bank_answer(request, context, Outcome.INVALID_CARD)
    if not version:  # cancelled or replaced before: not again
        return bank_answer(request, context, Outcome.RESTRICTED_CARD)
    return bank_answer(request, context, Outcome.APPROVED)


async def handle_pin_reload(request: CardService, context: BankContext) -> BankReply:
    """PIN reload after the counter's identity check: the new PIN arrives under the link's ZPK;
    the HSM's RELOAD PIN MAC (DRPK) goes back in F122's MAC2 element, and the counter sends
    ``80 5E 00 00 Lc new PIN || MAC`` to the card. The centre never sees the PIN in clear."""
    base = context.base
    card = base.cards.get(request.pan)
    refusal = loads.card_refusal(card, base.now)
    if refusal is not None or card is None:
        return bank_answer(request, context, refusal or Outcome.INVALID_CARD)
    if request.pin_block is None or context.zpk_in is None:
        return bank_answer(request, context, Outcome.PIN_FORMAT_ERROR)
    mac = await base.hsm.pin_reload_mac(
        card_key(KeyUsage.MK_PIN_RELOAD, card), context.zpk_in, request.pin_block, request.pan
    )
    return bank_answer(request, context, Outcome.APPROVED, card=CardData(mac2=mac))


async def handle_pin_unblock(request: CardService, context: BankContext) -> BankReply:
    """PIN unblock: the whole PIN UNBLOCK command (secure messaging under the card's DPUK, MACed
    with the card's challenge from F122) goes back as F122's issuer script."""
    base = context.base
    card = base.cards.get(request.pan)
    refusal = loads.card_refusal(card, base.now)
    if refusal is not None or card is None:
        return bank_answer(request, context, refusal or Outcome.INVALID_CARD)
    challenge = request.card.challenge if request.card is not None else None
    if challenge is None or request.pin_block is None or context.zpk_in is None:
        return bank_answer(request, context, Outcome.FORMAT_ERROR)
    command = await base.hsm.pin_unblock_command(
        card_key(KeyUsage.MK_PIN_UNBLOCK, card),
        context.zpk_in,
        request.pin_block,
        request.pan,
        challenge,
    )
    return bank_answer(request, context, Outcome.APPROVED, card=CardData(issuer_script=command))

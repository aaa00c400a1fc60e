"""Balance inquiry at a kiosk or POS: the personal fund, and the card's ED and EP shadows.

The shadows are what the centre has posted; the card itself may hold less (offline debits not
yet uploaded) — the kiosk shows the card's own balances beside these.
"""

from __future__ import annotations

from ledger.kinds import AccountKind, account_id
from messages.outcome import Outcome
from messages.private import Balance
from messages.terminal import BalanceInquiry, TerminalReply
from routing.common import answer
from routing.context import RequestContext
from routing.loads import card_refusal

# Field 54 account types (specs/terminal-interface.md).
PERSONAL_FUND, CARD_ED, CARD_EP = "91", "92", "93"


async def handle_balance_inquiry(request: BalanceInquiry, context: RequestContext) -> TerminalReply:
    card = context.cards.get(request.pan)
    refusal = card_refusal(card, context.now)
    if refusal is not None or card is None:
        return answer(request, context, refusal or Outcome.INVALID_CARD)
    ids = {
        PERSONAL_FUND: account_id(AccountKind.PERSONAL_FUND, card.cardholder_id),
        CARD_ED: account_id(AccountKind.CARD_ED_SHADOW, card.application_serial),
        CARD_EP: account_id(AccountKind.CARD_EP_SHADOW, card.application_serial),
    }
    found = await context.ledger.balances(list(ids.values()))
    balances = tuple(
        Balance(kind, found[key].balance_fen if key in found else 0) for kind, key in ids.items()
    )
    return answer(
        request,
        context,
        Outcome.APPROVED,
        balances=balances,
    )

"""Balance inquiry at a kiosk or POS: the personal fund, and the card's ED and EP shadows; and
the history inquiry: the latest postings on those three accounts.

The shadows are what the centre has posted; the card itself may hold less (offline debits not
yet uploaded) — the kiosk shows the card's own balances beside these.
"""

from __future__ import annotations

from datetime import datetime

from ledger.core import Transfer
from ledger.events.common import TransferCode
from ledger.kinds import AccountKind, account_id, kind_of
from messages.outcome import Outcome
from messages.private import Balance
from messages.terminal import BalanceInquiry, HistoryInquiry, HistoryReply, TerminalReply
from routing.common import answer
from routing.context import RequestContext
from routing.loads import card_refusal

# Field 54 account types (specs/terminal-interface.md).
PERSONAL_FUND, CARD_ED, CARD_EP = "91", "92", "93"


HISTORY_ROWS_MAX = 10  # per account asked, and in the reply
HISTORY_BYTES_MAX = 512  # field 62
INSTITUTION_KINDS = frozenset(
    {AccountKind.INSTITUTION_PAYABLE_INSURANCE, AccountKind.INSTITUTION_PAYABLE_EP}
)


def card_accounts(cardholder_id: str, application_serial: str) -> dict[str, str]:
    """Field 54's account type → the ledger account, for a card."""
    return {
        PERSONAL_FUND: account_id(AccountKind.PERSONAL_FUND, cardholder_id),
        CARD_ED: account_id(AccountKind.CARD_ED_SHADOW, application_serial),
        CARD_EP: account_id(AccountKind.CARD_EP_SHADOW, application_serial),
    }


async def handle_balance_inquiry(request: BalanceInquiry, context: RequestContext) -> TerminalReply:
    card = context.cards.get(request.pan)
    refusal = card_refusal(card, context.now)
    if refusal is not None or card is None:
        return answer(request, context, refusal or Outcome.INVALID_CARD)
    ids = card_accounts(card.cardholder_id, card.application_serial)
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


async def handle_history_inquiry(request: HistoryInquiry, context: RequestContext) -> TerminalReply:
    """The newest postings on the card's personal fund, ED and EP shadows, newest first, one
    UTF-8 line each, `yyyymmddhhmmss|type|amount_fen|institution` (the centre's time zone; the
    institution when the other side is one), as many as fit field 62."""
    card = context.cards.get(request.pan)
    refusal = card_refusal(card, context.now)
    if refusal is not None or card is None:
        return answer(request, context, refusal or Outcome.INVALID_CARD)
    postings = {}
    for account in card_accounts(card.cardholder_id, card.application_serial).values():
        for posted in await context.ledger.history(account, HISTORY_ROWS_MAX):
            postings[posted.transfer.id] = posted
    newest = sorted(postings.values(), key=lambda p: p.seq, reverse=True)[:HISTORY_ROWS_MAX]
    lines: list[bytes] = []
    size = 0
    for posted in newest:
        line = _history_line(posted.transfer, posted.posted_at_us or 0, context.now)
        if size + len(line) > HISTORY_BYTES_MAX:
            break
        lines.append(line)
        size += len(line)
    return answer(request, context, Outcome.APPROVED, HistoryReply, history=b"".join(lines))


def _history_line(transfer: Transfer, posted_at_us: int, now: datetime) -> bytes:
    when = datetime.fromtimestamp(posted_at_us / 1_000_000, now.tzinfo)
    try:
        kind = TransferCode(transfer.code).name.lower()
    except ValueError:
        kind = str(transfer.code)
    institution = ""
    for side in (transfer.debit_account_id, transfer.credit_account_id):
        if kind_of(side) in INSTITUTION_KINDS:
            institution = side.partition(":")[2]
    text = f"{when:%Y%m%d%H%M%S}|{kind}|{transfer.amount_fen}|{institution}\n"
    return text.encode()

"""What every handler does the same way: answer with the host's stamps, note a review item,
read the bill data a terminal sent under its session TDK."""

from __future__ import annotations

from typing import Any

from hsm.errors import HsmError
from ledger.core import ReviewItem, transfer_id
from messages.errors import CodecError
from messages.outcome import Outcome
from messages.private import BillData
from messages.terminal import TerminalMessage, TerminalReply
from messages.terminal_table import reply_to
from routing.context import RequestContext, host_stamps

REFERENCE_CHARS_MAX = 240


def answer(
    request: TerminalMessage,
    context: RequestContext,
    outcome: Outcome,
    cls: type[TerminalReply] = TerminalReply,
    *,
    reason: str = "",
    bill_id: str = "",
    **values: Any,
) -> TerminalReply:
    """The reply to ``request`` (of class ``cls``): its outcome, the host's date and time (they
    set the terminal's clock), the amount echoed when the request has one, and ``values``.
    ``reason`` (machine-readable, no card data) and ``bill_id`` go to the request's log line
    when the outcome is a refusal."""
    if reason or bill_id:
        context.note_why(reason, bill_id)
    values.setdefault("amount_fen", request.amount())
    host_time, host_date = host_stamps(context.now)  # once, not once per stamp
    return reply_to(request, outcome.code, cls, host_time=host_time, host_date=host_date, **values)


async def note(
    context: RequestContext, reason: str, subject: str, amount_fen: int, detail: str
) -> None:
    """An anomaly for a person to review, recorded once per reason and subject."""
    item = ReviewItem(
        transfer_id("review", reason, subject),
        reason,
        subject[:REFERENCE_CHARS_MAX],
        amount_fen,
        detail,
    )
    await context.ledger.add_review(item)


async def bill_data(context: RequestContext, cipher: bytes | None) -> BillData | None:
    """Field 63 decrypted under the session's TDK; ``None`` when absent or unreadable."""
    tdk = context.session.tdk if context.session is not None else None
    if cipher is None or tdk is None:
        return None
    try:
        return BillData.parse(await context.hsm.decrypt_data(tdk, cipher))
    except (HsmError, CodecError):
        return None

"""What a POS decides on its own: whether a purchase may go offline (the downloaded limits and
the local blacklist) and the receipt's lines explaining a bill's split.

>>> state = TerminalState(None, floor_fen=500, count_max=2, age_max_h=24)
>>> check_offline(state, "31", 400, datetime(2026, 11, 25, 10, 0))
>>> check_offline(state, "31", 600, datetime(2026, 11, 25, 10, 0))
Traceback (most recent call last):
...
simulators.terminal_link.TerminalError: 6.00 is above the offline floor limit 5.00: ...
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from messages.private import BillData
from simulators.terminal_link import TerminalError, TerminalState, yuan


def offline_records(state: TerminalState) -> list[dict[str, Any]]:
    """The batch's purchases taken with no line to the centre."""
    return [r for r in state.records if not r.get("online")]


def check_offline(state: TerminalState, serial_hex: str, amount_fen: int, now: datetime) -> None:
    """Refuse an offline purchase the downloaded limits do not allow (TerminalError says why):
    the card on the local blacklist, no limits downloaded yet, above the floor limit, the
    batch's offline count at its maximum, its oldest offline record older than the age limit."""
    if serial_hex in state.blacklist:
        raise TerminalError("card on the blacklist: no offline purchase")
    if not state.count_max:
        raise TerminalError("no offline limits downloaded: sign on to the centre first")
    if amount_fen > state.floor_fen:
        raise TerminalError(
            f"{yuan(amount_fen)} is above the offline floor limit {yuan(state.floor_fen)}:"
            " no offline purchase"
        )
    pending = offline_records(state)
    if len(pending) >= state.count_max:
        raise TerminalError(
            f"{len(pending)} offline records, the most allowed: settle the batch first"
        )
    if pending:
        oldest = min(datetime.fromisoformat(r["at"]) for r in pending)
        if now - oldest > timedelta(hours=state.age_max_h):
            raise TerminalError(
                f"the oldest offline record ({oldest:%Y-%m-%d %H:%M}) is older than"
                f" {state.age_max_h} h: settle the batch first"
            )


def receipt(bill_id: str, split: BillData) -> list[str]:
    """The bill's split: who pays what (personal account from the card's ED, pooled fund,
    self-pay) and the centre's explanation lines."""
    lines = [
        f"bill {bill_id}: total {yuan(split.total_fen or 0)}",
        f"  personal account {yuan(split.personal_fen or 0)} (from the card's ED)",
        f"  pooled fund      {yuan(split.pooled_fen or 0)} (paid by the fund to the hospital)",
        f"  self-pay         {yuan(split.self_pay_fen or 0)}",
    ]
    lines += [f"  {line}" for line in (split.explanation or "").splitlines()]
    return lines


def self_pay_line(how: str, amount_fen: int, tac: bytes | None = None) -> str:
    if how == "ep":
        code = (tac or b"").hex().upper()
        return f"  self-pay {yuan(amount_fen)} from the card's EP (TAC {code})"
    return f"  self-pay {yuan(amount_fen)} collected in cash"

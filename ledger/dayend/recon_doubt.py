"""The sweep of loads and unloads still in doubt past their age: each becomes a review item
(reason ``load_in_doubt_aged``) for a person to chase — the card's next load or GET TRANSACTION
PROVE normally settles it long before (ledger.events.loads).

An attempt is still in doubt when its into-doubt transfer posted and its resolution did not;
only doubt accounts with a balance are looked at, so the sweep reads little however many loads
a day has seen. Its review key comes from the attempt's into-doubt transfer, so sweeping again
adds nothing. The clock is passed in (`now_us`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, and_, select

from ledger import schema
from ledger.core import Ledger, ReviewItem, transfer_id
from ledger.events.common import TransferCode
from ledger.events.loads import Attempt
from ledger.kinds import AccountKind

REASON = "load_in_doubt_aged"
DEFAULT_AGE_S = 24 * 3600
DOUBT_KINDS = (
    AccountKind.ED_LOADS_IN_DOUBT.value,
    AccountKind.EP_LOADS_IN_DOUBT.value,
    AccountKind.UNLOADS_IN_DOUBT.value,
)
INTO_DOUBT = (int(TransferCode.LOAD_INTO_DOUBT), int(TransferCode.UNLOAD_INTO_DOUBT))


@dataclass(frozen=True)
class AgedAttempt:
    attempt: Attempt
    into_doubt_id: str
    posted_at_us: int
    age_s: int


@dataclass(frozen=True)
class SweepResult:
    aged: tuple[AgedAttempt, ...]  # every attempt in doubt older than the age
    added: int  # review items new now (the others were swept before)


def _candidates(engine: Engine, cutoff_us: int) -> list[tuple[str, str, int, int]]:
    a, t = schema.accounts.c, schema.transfers.c
    statement = (
        select(t.id, t.reference, t.amount_fen, t.posted_at_us)
        .select_from(schema.accounts.join(schema.transfers, t.credit_account_id == a.id))
        .where(
            a.kind.in_(DOUBT_KINDS),
            a.debits_posted != a.credits_posted,
            and_(t.code.in_(INTO_DOUBT), t.result == 0, t.posted_at_us <= cutoff_us),
        )
        .order_by(t.seq)
    )
    with engine.connect() as connection:
        return [
            (r.id, r.reference, int(r.amount_fen), int(r.posted_at_us))
            for r in connection.execute(statement)
        ]


async def aged_attempts(
    engine: Engine, ledger: Ledger, now_us: int, age_s: int
) -> list[AgedAttempt]:
    """Attempts in doubt whose into-doubt transfer is at least `age_s` old at `now_us`."""
    found = []
    for into_doubt_id, reference, amount, posted_at in _candidates(engine, now_us - age_s * 10**6):
        attempt = Attempt.parse(reference, amount)
        found.append(AgedAttempt(attempt, into_doubt_id, posted_at, (now_us - posted_at) // 10**6))
    resolved = await ledger.lookup_transfers([x.attempt.resolve_id for x in found])
    done = {tid for tid, posted in resolved.items() if posted.result.ok}
    return [x for x in found if x.attempt.resolve_id not in done]


def review_item(aged: AgedAttempt) -> ReviewItem:
    attempt = aged.attempt
    op = "unload" if attempt.unload else "load"
    return ReviewItem(
        key=transfer_id("review", REASON, aged.into_doubt_id),
        reason=REASON,
        reference=f"{op}|{attempt.purse.value}|{attempt.application_serial}|"
        f"{attempt.online_counter}|{attempt.message_key}"[:240],
        amount_fen=attempt.amount_fen,
        detail=f"in doubt since {_utc(aged.posted_at_us)} ({_age(aged.age_s)}); "
        f"party {attempt.party}",
    )


def _age(seconds: int) -> str:
    """A duration for people.

    >>> _age(90_000), _age(7_200), _age(300)
    ('25 h', '2 h', '5 min')
    """
    return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"


def _utc(at_us: int) -> str:
    """A time for people (the review item's detail), not microseconds.

    >>> _utc(1_764_151_200_000_000)
    '2025-11-26 10:00:00Z'
    """
    return dt.datetime.fromtimestamp(at_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def sweep(
    engine: Engine, ledger: Ledger, now_us: int, age_s: int = DEFAULT_AGE_S
) -> SweepResult:
    """Put every attempt in doubt for `age_s` or more into review (once each)."""
    if age_s < 0:
        raise ValueError("the age is not negative")
    aged = await aged_attempts(engine, ledger, now_us, age_s)
    # concurrent: the ledger's group commit records them in a few durable commits
    added = await asyncio.gather(*(ledger.add_review(review_item(item)) for item in aged))
    return SweepResult(tuple(aged), sum(added))

"""What money is at risk, read from the database for `/metrics` and `/status`: loads in doubt,
the review queue, the day-end of the last closed business date, terminals signed on per
institution, reversals waiting in each bank's store-and-forward queue.

Each read is a few queries (:func:`read_risk`, run in a worker thread so the event loop never
waits on the database), and :class:`RiskWatch` keeps the last one for ``max_age_s`` (10 s): a
scrape every 15 s and an operator's `medswitch status` share one read, and a burst of scrapes
reads once. The costliest query is one pass over the accounts (the doubt accounts with a
balance; no index serves it, and one on a balance would cost every posting to the hottest
accounts); the transfers are read only through their indexes (on a copy of the demo with
100,000 cardholders, 700,000 accounts: 71-78 ms a read, in its thread). A read that does not
finish within ``timeout_s`` leaves the previous one in place (``stale`` counts them); the first
read's failure is the caller's.

Loads in doubt: an attempt is in doubt when its into-doubt transfer posted and its resolution
did not (`ledger.events.loads`); only doubt accounts with a balance are looked at (as the
day-end's sweep does, `ledger.dayend.recon_doubt`), at most ``CANDIDATES_MAX`` transfers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import and_, func, select

from ledger import schema
from ledger.dayend.calendar import Cutover
from ledger.dayend.recon_doubt import DOUBT_KINDS, INTO_DOUBT
from ledger.events.loads import Attempt
from switch.config import Config

log = logging.getLogger("medswitch.risk")

CANDIDATES_MAX = 10_000  # into-doubt transfers looked at per read
REASONS_MAX = 64  # review reasons reported (a label each); the rest are summed as "other"
INSTITUTIONS_MAX = 1_000  # institutions reported with terminals signed on
OPEN_STATUSES = ("open", "adjusting")  # review items a person still has to act on
DAYEND_STATES = ("pending", "prepared", "approved", "rejected")
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class InDoubt:
    count: int = 0
    fen: int = 0
    oldest_at_us: int | None = None  # the oldest attempt's into-doubt transfer
    capped: bool = False  # more than CANDIDATES_MAX candidates: the figures are a lower bound


@dataclass(frozen=True, slots=True)
class DayEnd:
    """The last business date whose cut-over has passed, and where its day-end is."""

    business_date: str
    state: str  # one of DAYEND_STATES; pending: not run yet
    cutover_at_us: int


@dataclass(frozen=True, slots=True)
class Risk:
    read_at_us: int
    in_doubt: InDoubt
    review: dict[str, int]  # reason → open items
    dayend: DayEnd
    signed_on: dict[str, int]  # institution → terminals with a current session
    saf: dict[str, tuple[int, int]] = field(default_factory=dict)  # bank → (queued, oldest µs)
    review_oldest_us: dict[str, int] = field(default_factory=dict)  # reason → oldest item's µs


def read_risk(engine: Any, cutover: Cutover, now_us: int) -> Risk:
    """One read of the database (SQLAlchemy Core: SQLite's Engine or the PostgreSQL bridge's)."""
    with engine.connect() as connection:
        review = _review(connection)
        return Risk(
            now_us,
            _in_doubt(connection),
            review.counts,
            _dayend(connection, cutover, now_us),
            _signed_on(connection),
            _saf(connection),
            review.oldest_us,
        )


def _in_doubt(connection: Any) -> InDoubt:
    """Two steps, each on an index or one pass: the doubt accounts with a balance (a pass over
    the accounts; transfers are not scanned), then their into-doubt transfers (by the credit
    account's index) and which of those have their resolution (by transfer id)."""
    a, t = schema.accounts.c, schema.transfers.c
    open_accounts = [
        str(row[0])
        for row in connection.execute(
            select(a.id).where(a.kind.in_(DOUBT_KINDS), a.debits_posted != a.credits_posted)
        )
    ]
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(open_accounts), _CHUNK):
        if len(rows) > CANDIDATES_MAX:
            break
        into = select(t.reference, t.amount_fen, t.posted_at_us).where(
            t.credit_account_id.in_(open_accounts[start : start + _CHUNK]),
            and_(t.code.in_(INTO_DOUBT), t.result == 0),
        )
        rows += [tuple(row) for row in connection.execute(into)]
    capped = len(rows) > CANDIDATES_MAX
    rows = rows[:CANDIDATES_MAX]
    attempts = {Attempt.parse(r[0], int(r[1])).resolve_id: (int(r[1]), int(r[2])) for r in rows}
    ids = list(attempts)
    for start in range(0, len(ids), _CHUNK):
        done = select(t.id).where(t.id.in_(ids[start : start + _CHUNK]), t.result == 0)
        for (resolved,) in connection.execute(done):
            attempts.pop(resolved, None)
    if not attempts:
        return InDoubt(capped=capped)
    return InDoubt(
        len(attempts),
        sum(fen for fen, _ in attempts.values()),
        min(at for _, at in attempts.values()),
        capped,
    )


class _Review(NamedTuple):
    counts: dict[str, int]  # reason → open items
    oldest_us: dict[str, int]  # reason → when its oldest open item was raised


def _review(connection: Any) -> _Review:
    r = schema.review_items.c
    statement = (
        select(r.reason, func.count(), func.min(r.created_at_us))
        .where(r.status.in_(OPEN_STATUSES))
        .group_by(r.reason)
        .order_by(func.count().desc())
    )
    counts: dict[str, int] = {}
    oldest: dict[str, int] = {}
    for reason, count, first in connection.execute(statement):
        key = str(reason) if len(counts) < REASONS_MAX else "other"
        counts[key] = counts.get(key, 0) + int(count)
        oldest[key] = min(oldest.get(key, int(first)), int(first))
    return _Review(counts, oldest)


def _dayend(connection: Any, cutover: Cutover, now_us: int) -> DayEnd:
    closed = cutover.date_of(now_us) - dt.timedelta(days=1)
    b = schema.business_days.c
    found = connection.execute(
        select(b.status).where(b.business_date == closed.isoformat())
    ).first()
    state = "pending" if found is None else str(found[0])
    return DayEnd(closed.isoformat(), state, cutover.instant_us(closed))


def _signed_on(connection: Any) -> dict[str, int]:
    s, t = schema.session_sets.c, schema.terminals.c
    statement = (
        select(t.institution_id, func.count())
        .select_from(schema.session_sets.join(schema.terminals, t.id == s.terminal_id))
        .where(s.state == "current")
        .group_by(t.institution_id)
        .order_by(t.institution_id)
        .limit(INSTITUTIONS_MAX)
    )
    return {str(institution): int(count) for institution, count in connection.execute(statement)}


def _saf(connection: Any) -> dict[str, tuple[int, int]]:
    q = schema.reversal_queue.c
    statement = (
        select(q.bank_id, func.count(), func.min(q.created_at_us))
        .where(q.status == "queued")
        .group_by(q.bank_id)
        .order_by(q.bank_id)
        .limit(INSTITUTIONS_MAX)
    )
    return {str(bank): (int(count), int(oldest)) for bank, count, oldest in connection.execute(
        statement
    )}


@dataclass
class RiskWatch:
    """The last read, refreshed on demand when older than ``max_age_s`` (one read at a time)."""

    read: Callable[[int], Risk]  # now (µs) → a read; runs in a worker thread
    max_age_s: float = 10.0
    timeout_s: float = 5.0
    clock: Callable[[], float] = time.time
    last: Risk | None = None
    stale: int = 0  # reads that failed or took longer than timeout_s
    _reading: asyncio.Task[Risk] | None = field(default=None, repr=False)

    async def current(self) -> Risk:
        """A read at most ``max_age_s`` old — or, when the database does not answer in time,
        the last one (``RuntimeError`` if there is none)."""
        now = self.clock()
        last = self.last
        if last is not None and now - last.read_at_us / 1e6 < self.max_age_s:
            return last
        if self._reading is None or self._reading.done():
            now_us = int(now * 1e6)
            self._reading = asyncio.ensure_future(asyncio.to_thread(self.read, now_us))
        try:
            self.last = await asyncio.wait_for(asyncio.shield(self._reading), self.timeout_s)
        except Exception as error:  # the database is slow or down: say so, keep the last read
            self.stale += 1
            if self.stale & (self.stale - 1) == 0:  # the 1st, 2nd, 4th... time
                log.warning("risk read failed (%s; %d so far)", type(error).__name__, self.stale)
            if last is None:
                raise RuntimeError(f"no risk read yet: {type(error).__name__}") from error
            return last
        return self.last


def risk_watch(engine: Any, config: Config) -> RiskWatch:
    """The daemon's watch: reads through ``engine`` (SQLAlchemy Core, either backend), the
    business date by ``[dayend]`` cut-over and time zone (else the centre's)."""
    cutover = Cutover.parse(config.dayend.cutover, config.dayend.timezone or config.timezone)
    return RiskWatch(partial(read_risk, engine, cutover))


def oldest_age_s(risk: Risk) -> float:
    """Seconds since the oldest load in doubt went into doubt (0 when none is)."""
    oldest = risk.in_doubt.oldest_at_us
    return 0.0 if oldest is None else max(0.0, (risk.read_at_us - oldest) / 1e6)


def review_ages_s(risk: Risk) -> dict[str, float]:
    """Reason → seconds its oldest open review item has waited."""
    return {
        reason: max(0.0, (risk.read_at_us - at) / 1e6)
        for reason, at in sorted(risk.review_oldest_us.items())
    }


def reasons(known: Sequence[str], risk: Risk) -> dict[str, int]:
    """The review counts with every ``known`` reason present (0 when none is open)."""
    return {**dict.fromkeys(known, 0), **risk.review}

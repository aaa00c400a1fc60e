"""The reversal queue's delivery state, on either backend: the queued reversals of a bank in
order with their attempts, their first sending's F11 and F7 (a repeat carries them again) and
when each is due again; an attempt recorded with its next due time, an acknowledgement, and a
reversal given up to the review queue (its review item written in the same transaction).

The rows are written by the ledger (``reversal_queue``, :func:`ledger.events.resolve_attempt`);
this module only moves them along: ``queued`` → ``acknowledged`` | ``review``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ledger.core import QueuedReversal, ReviewItem

QUEUED, ACKNOWLEDGED, REVIEW = "queued", "acknowledged", "review"


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued reversal and its delivery state."""

    item: QueuedReversal
    attempts: int
    created_at_us: int = 0
    next_at_us: int = 0
    stan: str | None = None  # F11 and F7 of its first sending; None before it
    transmitted: str | None = None

    @property
    def key(self) -> str:
        return self.item.key


@dataclass(frozen=True, slots=True)
class Depth:
    """A bank's queued reversals: how many, and when the oldest was queued (None: none)."""

    count: int
    oldest_at_us: int | None


class ReversalQueue(Protocol):
    """The queue's delivery state (:class:`SqliteReversalQueue`,
    ``switch.pg_stores.PgReversalQueue``)."""

    async def pending(self, bank_id: str, limit: int = 100) -> list[Pending]: ...

    async def depth(self, bank_id: str) -> Depth: ...

    async def sending(self, key: str, stan: str, transmitted: str, at_us: int) -> None:
        """Before a send: keep ``stan`` and ``transmitted`` unless it has them already."""

    async def attempted(self, key: str, *, acknowledged: bool, next_at_us: int) -> None:
        """One more attempt: acknowledged, or due again at ``next_at_us``."""

    async def give_up(self, key: str, review: ReviewItem, at_us: int) -> bool:
        """To the review queue: the status ``review`` and ``review`` recorded, together."""


COLUMNS = (
    "key, bank_id, reference, amount_fen, attempts, created_at_us, next_at_us, stan, transmitted"
)
PENDING = (
    f"SELECT {COLUMNS} FROM reversal_queue "
    "WHERE bank_id = {0} AND status = 'queued' ORDER BY seq LIMIT {1}"
)
DEPTH = (
    "SELECT count(*), min(created_at_us) FROM reversal_queue "
    "WHERE bank_id = {0} AND status = 'queued'"
)
SENDING = (
    "UPDATE reversal_queue SET stan = coalesce(stan, {1}), "
    "transmitted = coalesce(transmitted, {2}), last_at_us = {3} "
    "WHERE key = {0} AND status = 'queued'"
)
ATTEMPTED = (
    "UPDATE reversal_queue SET attempts = attempts + 1, status = {1}, next_at_us = {2} "
    "WHERE key = {0} AND status = 'queued'"
)
TO_REVIEW = "UPDATE reversal_queue SET status = 'review' WHERE key = {0} AND status = 'queued'"
ADD_REVIEW = (
    "INSERT INTO review_items (key, reason, reference, amount_fen, detail, created_at_us) "
    "VALUES ({0}, {1}, {2}, {3}, {4}, {5}) ON CONFLICT (key) DO NOTHING"
)


def pending_of(rows: list[Any]) -> list[Pending]:
    return [
        Pending(
            QueuedReversal(r[0], r[1], r[2], int(r[3])),
            int(r[4]),
            int(r[5]),
            int(r[6]),
            None if r[7] is None else str(r[7]),
            None if r[8] is None else str(r[8]),
        )
        for r in rows
    ]


def review_values(review: ReviewItem, at_us: int) -> tuple[Any, ...]:
    return (review.key, review.reason, review.reference, review.amount_fen, review.detail, at_us)


def status_of(acknowledged: bool) -> str:
    return ACKNOWLEDGED if acknowledged else QUEUED


class SqliteReversalQueue:
    """The queue's delivery state in the embedded database."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=10.0)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection

    def _read(self, sql: str, values: tuple[Any, ...]) -> list[Any]:
        with contextlib.closing(self._connect()) as connection:
            return connection.execute(sql, values).fetchall()

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> int:
        """The statements in one transaction; the rows the last one changed."""
        changed = 0
        with contextlib.closing(self._connect()) as connection, connection:
            for sql, values in statements:
                changed = connection.execute(sql, values).rowcount
        return changed

    async def pending(self, bank_id: str, limit: int = 100) -> list[Pending]:
        rows = await asyncio.to_thread(self._read, PENDING.format("?", "?"), (bank_id, limit))
        return pending_of(rows)

    async def depth(self, bank_id: str) -> Depth:
        rows = await asyncio.to_thread(self._read, DEPTH.format("?"), (bank_id,))
        count, oldest = rows[0]
        return Depth(int(count), None if oldest is None else int(oldest))

    async def sending(self, key: str, stan: str, transmitted: str, at_us: int) -> None:
        sql = SENDING.format("?4", "?1", "?2", "?3")  # numbered: SQLite binds in order of use
        await asyncio.to_thread(self._write, (sql, (stan, transmitted, at_us, key)))

    async def attempted(self, key: str, *, acknowledged: bool, next_at_us: int) -> None:
        sql = ATTEMPTED.format("?3", "?1", "?2")
        values = (status_of(acknowledged), next_at_us, key)
        await asyncio.to_thread(self._write, (sql, values))

    async def give_up(self, key: str, review: ReviewItem, at_us: int) -> bool:
        add = (ADD_REVIEW.format(*"??????"), review_values(review, at_us))
        moved = await asyncio.to_thread(self._write, add, (TO_REVIEW.format("?"), (key,)))
        return moved == 1


class PgReversalQueue:
    """The queue's delivery state on PostgreSQL (an ``asyncpg`` pool)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def pending(self, bank_id: str, limit: int = 100) -> list[Pending]:
        rows = await self._pool.fetch(PENDING.format("$1", "$2"), bank_id, limit)
        return pending_of(list(rows))

    async def depth(self, bank_id: str) -> Depth:
        count, oldest = await self._pool.fetchrow(DEPTH.format("$1"), bank_id)
        return Depth(int(count), None if oldest is None else int(oldest))

    async def sending(self, key: str, stan: str, transmitted: str, at_us: int) -> None:
        sql = SENDING.format("$1", "$2::varchar", "$3::varchar", "$4::bigint")
        await self._pool.execute(sql, key, stan, transmitted, at_us)

    async def attempted(self, key: str, *, acknowledged: bool, next_at_us: int) -> None:
        sql = ATTEMPTED.format("$1", "$2", "$3::bigint")
        await self._pool.execute(sql, key, status_of(acknowledged), next_at_us)

    async def give_up(self, key: str, review: ReviewItem, at_us: int) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                ADD_REVIEW.format("$1", "$2", "$3", "$4", "$5", "$6"), *review_values(review, at_us)
            )
            status = await connection.execute(TO_REVIEW.format("$1"), key)
        return bool(status == "UPDATE 1")

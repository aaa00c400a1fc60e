"""The retransmission cache on the embedded SQLite file: durable, so that a retransmission after
a restart gets the original reply byte for byte (DESIGN §5's message identity), as it does on
PostgreSQL (`switch.reply_store`).

One process serves a SQLite file, so the process's cache holds every reply it has made: lookups
stay in memory (no read per request). What the table adds is the replies of earlier runs, read
once, before the first lookup (the most recent `entries_max` unexpired ones). A reply is written
through the ledger's writer — one statement per group of replies, in the writer's next group
commit with the other requests' work: no fsync of its own — and sent only once that commit is
durable. The table is bounded like the memory: rows older than the cache's age and beyond its
size are deleted now and then in the same writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.group_commit import CALL
from messages.outcome import Outcome
from switch.replies import Remembered, Replay, ReplyCache
from switch.reply_store import DIGEST_BYTES, Batcher

log = logging.getLogger("medswitch.replies")
PURGE_EVERY_S = 600.0
_INSERT = (
    "INSERT OR IGNORE INTO response_cache (message_key, response, created_at_us, expires_at_us)"
    " VALUES (?, ?, ?, ?)"
)


class Writes(Protocol):
    """The ledger's writer (`ledger.group_commit.Writer` or `ledger.writer_process`)."""

    async def submit(self, kind: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class StoreReplies:
    """Write replies (message key, digest + reply) in the writer's transaction; with
    ``purge_before_us``, delete the rows expired by then and all but the newest ``rows_max``.
    Runs on the writer (it pickles: the writer may be a process of its own)."""

    rows: tuple[tuple[str, bytes], ...]
    created_at_us: int
    expires_at_us: int
    purge_before_us: int | None
    rows_max: int

    def __call__(self, db: sqlite3.Connection) -> int:
        created, expires = self.created_at_us, self.expires_at_us
        db.executemany(_INSERT, [(key, row, created, expires) for key, row in self.rows])
        if self.purge_before_us is None:
            return 0
        purged = db.execute(
            "DELETE FROM response_cache WHERE expires_at_us < ?", (self.purge_before_us,)
        ).rowcount
        purged += db.execute(
            "DELETE FROM response_cache WHERE expires_at_us <= (SELECT expires_at_us FROM"
            " response_cache ORDER BY expires_at_us DESC LIMIT 1 OFFSET ?)",
            (self.rows_max,),
        ).rowcount
        return int(purged)


@dataclass(frozen=True, slots=True)
class LoadReplies:
    """The newest ``rows_max`` unexpired rows (key, digest + reply, created at), oldest first."""

    now_us: int
    rows_max: int

    def __call__(self, db: sqlite3.Connection) -> list[tuple[str, bytes, int]]:
        rows = db.execute(
            "SELECT message_key, response, created_at_us FROM response_cache"
            " WHERE expires_at_us > ? ORDER BY expires_at_us DESC LIMIT ?",
            (self.now_us, self.rows_max),
        ).fetchall()
        return [(key, bytes(row), int(created)) for key, row, created in reversed(rows)]


class FileReplyCache(ReplyCache):
    """`ReplyCache` whose replies are durable in the SQLite file before they are sent."""

    def __init__(
        self, writer: Writes, entries_max: int = 200_000, age_max_s: float = 24 * 3600.0
    ) -> None:
        super().__init__(entries_max=entries_max, age_max_s=age_max_s)
        self._writer = writer
        self._store: Batcher[tuple[str, bytes], None] = Batcher(self._write)
        self._writing: dict[str, asyncio.Future[None]] = {}
        self._loaded: asyncio.Future[None] | None = None
        self._purged_at_s = time.monotonic() - PURGE_EVERY_S  # the first write purges

    async def earlier(self, key: str, digest: bytes) -> bytes | Outcome | None:
        if self._loaded is None or not self._loaded.done():
            await self.load()
        return await super().earlier(key, digest)

    async def load(self) -> None:
        """Read the earlier runs' replies (once; the first lookup waits for it)."""
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)

    async def _load(self) -> None:
        now_us = _now_us()
        rows = await self._writer.submit(CALL, LoadReplies(now_us, self._entries_max))
        now_s = time.monotonic()
        for key, row, created_us in rows:
            if key in self._entries or key in self._pending:
                continue  # made in this run already (while the rows were read)
            at_s = now_s - (now_us - created_us) / 1_000_000
            self._entries[key] = Remembered(row[:DIGEST_BYTES], row[DIGEST_BYTES:], at_s)
        log.info("response cache: %d replies of earlier runs", len(rows))

    def finish(self, key: str, digest: bytes, reply: bytes | None) -> None:
        super().finish(key, digest, reply)
        if reply is not None:
            writing = asyncio.ensure_future(self._store((key, digest + reply)))
            self._writing[key] = writing
            writing.add_done_callback(lambda done: self._written(key, done))

    def _written(self, key: str, done: asyncio.Future[None]) -> None:
        if done.cancelled():
            self._writing.pop(key, None)
        elif done.exception() is not None:
            log.error("response cache write failed: %s", done.exception())
            self._writing.pop(key, None)
        elif self._writing.get(key) is done:
            del self._writing[key]

    async def remember(self, replay: Replay | None, reply: Awaitable[bytes]) -> bytes:
        """The reply, once it is durable in the file too (a restart then still knows it)."""
        encoded = await super().remember(replay, reply)
        if replay is not None:
            writing = self._writing.pop(replay[0], None)
            if writing is not None:
                # a failed write is logged; the reply still goes (the ledger stays idempotent)
                with contextlib.suppress(Exception):
                    await writing
        return encoded

    async def _write(self, items: list[tuple[str, bytes]]) -> list[None]:
        now_us = _now_us()
        purge = None
        if time.monotonic() - self._purged_at_s > PURGE_EVERY_S:
            self._purged_at_s = time.monotonic()
            purge = now_us
        expires_us = now_us + int(self._age_max_s * 1_000_000)
        store = StoreReplies(tuple(items), now_us, expires_us, purge, self._entries_max)
        await self._writer.submit(CALL, store)
        return [None] * len(items)


def _now_us() -> int:
    return time.time_ns() // 1000

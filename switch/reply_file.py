"""The retransmission cache on the embedded SQLite file: durable, so that a retransmission after
a restart gets the original reply byte for byte (DESIGN §5's message identity), as it does on
PostgreSQL (`switch.reply_store`).

One process serves a SQLite file, so the process's cache holds every reply it has made: lookups
stay in memory (no read per request). What the table adds is the replies of earlier runs, read
once, before the first lookup (the most recent `entries_max` unexpired ones). A reply is written
through the ledger's writer — one statement for each loop turn's replies, in the writer's next
group commit with the other requests' work — and sent once that commit is done. A commit of
replies alone is not fsynced (an unsynced `Call`): a reply then survives the daemon's crash or
restart, and the next commit's fsync takes it to the disk; were the machine to fail in between,
its retransmission is handled afresh, which the ledger's idempotent transfers keep safe. The table
is bounded like the memory: rows older than the cache's age and beyond its size are deleted now
and then in the same writes.
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

from ledger.writer.jobs import Call, Operation
from messages.outcome import Outcome
from switch.replies import Remembered, Replay, ReplyCache
from switch.reply_store import BATCH_MAX, DIGEST_BYTES

log = logging.getLogger("medswitch.replies")
PURGE_EVERY_S = 600.0
_INSERT = (
    "INSERT OR IGNORE INTO response_cache (message_key, response, created_at_us, expires_at_us)"
    " VALUES (?, ?, ?, ?)"
)


class Writes(Protocol):
    """The ledger's writer (`ledger.writer.engine.Writer` or `ledger.writer.process`)."""

    async def submit(self, op: Operation) -> Any: ...


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
        self._queued: list[tuple[str, bytes]] = []  # this loop turn's replies, written at its end
        self._group: asyncio.Future[None] | None = None  # resolved once they are written
        self._loaded: asyncio.Future[None] | None = None
        with contextlib.suppress(RuntimeError):  # on a loop (the daemon's start): read now
            self._loaded = asyncio.get_running_loop().create_task(self._load())
        self._purged_at_s = time.monotonic() - PURGE_EVERY_S  # the first write purges

    async def earlier(self, key: str, digest: bytes) -> bytes | Outcome | None:
        if self._loaded is None or not self._loaded.done():
            await self.load()
        return await super().earlier(key, digest)

    async def load(self) -> None:
        """Read the earlier runs' replies (once, from the start on a running loop; a lookup
        before they are in waits for them)."""
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)

    async def _load(self) -> None:
        now_us = _now_us()
        try:
            rows = await self._writer.submit(Call(LoadReplies(now_us, self._entries_max)))
        except Exception as error:  # served from memory: the ledger stays idempotent
            log.error("response cache: earlier runs' replies not read: %s", error)
            return
        now_s = time.monotonic()
        for key, row, created_us in rows:
            if key in self._entries or key in self._pending:
                continue  # made in this run already (while the rows were read)
            at_s = now_s - (now_us - created_us) / 1_000_000
            self._entries[key] = Remembered(row[:DIGEST_BYTES], row[DIGEST_BYTES:], at_s)
        log.info("response cache: %d replies of earlier runs", len(rows))

    def finish(self, key: str, digest: bytes, reply: bytes | None) -> None:
        super().finish(key, digest, reply)
        if reply is None:
            return
        if self._group is None:  # the loop turn's replies: one write, one future
            loop = asyncio.get_running_loop()
            self._group = loop.create_future()
            loop.call_soon(self._flush)
        self._queued.append((key, digest + reply))

    async def remember(self, replay: Replay | None, reply: Awaitable[bytes]) -> bytes:
        """The reply, once it is in the file too (a restart then still knows it)."""
        encoded = await super().remember(replay, reply)
        group = self._group  # the one its finish() joined: nothing ran in between
        if replay is not None and group is not None:
            with contextlib.suppress(Exception):  # logged once; the ledger stays idempotent
                await asyncio.shield(group)
        return encoded

    def _flush(self) -> None:
        rows, group = self._queued, self._group
        self._queued, self._group = [], None
        if group is None or not rows:
            return
        writing = asyncio.ensure_future(self._write(rows))
        writing.add_done_callback(lambda done: _settle(group, done))

    async def _write(self, rows: list[tuple[str, bytes]]) -> None:
        now_us = _now_us()
        purge = None
        if time.monotonic() - self._purged_at_s > PURGE_EVERY_S:
            self._purged_at_s = time.monotonic()
            purge = now_us
        expires_us = now_us + int(self._age_max_s * 1_000_000)
        for start in range(0, len(rows), BATCH_MAX):
            chunk = tuple(rows[start : start + BATCH_MAX])
            store = StoreReplies(chunk, now_us, expires_us, purge, self._entries_max)
            await self._writer.submit(Call(store, synced=False))


def _settle(group: asyncio.Future[None], done: asyncio.Future[None]) -> None:
    if group.done():
        return
    if done.cancelled():
        group.cancel()
    elif (error := done.exception()) is not None:
        log.error("response cache write failed: %s", error)
        group.set_exception(error)
    else:
        group.set_result(None)


def _now_us() -> int:
    return time.time_ns() // 1000

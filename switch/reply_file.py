"""The retransmission cache on the embedded SQLite deployment: durable, so that a retransmission
after a crash or restart gets the original reply byte for byte (DESIGN §5's message identity),
as it does on PostgreSQL (`switch.reply_store`).

One process serves a SQLite deployment (``workers > 1`` needs PostgreSQL), so the process's
cache holds every reply it has made: lookups stay in memory (no read per request). What the file
adds is the replies of earlier runs, read once, before the first lookup (the most recent
``entries_max`` unexpired ones).

The replies live in a file of their own beside the ledger's (``medswitch-replies.db`` beside
``medswitch.db``: `replies_file`), written by a thread of their own — not the ledger's writer,
whose group commits wait for an fsync: each loop turn's replies are one transaction on that
thread (one thread hop per turn; turns that end while a write is running go together in the
next), and a reply is sent once its transaction has committed. The file is in WAL mode with
``synchronous=NORMAL``: a commit is in the operating system's hands when it returns, so a reply
survives the daemon's crash (kill -9) or restart; it reaches the disk at the file's next
checkpoint — SQLite's own every ~1,000 pages, one this thread runs `SYNC_EVERY_S` after a
write, and the one at close. Were the machine to fail in between, the retransmission of a reply
made since is handled afresh, which the ledger's idempotent transfers keep safe (the request's
own work was committed before its reply was made). The table is bounded like the
memory: rows older than the cache's age and beyond its size are deleted now and then in the
same writes.

Before this file existed the replies were rows of the ledger's ``response_cache`` table (written
through the ledger's writer). At start, any such rows are copied into this file (unexpired ones,
kept if already here) and then deleted from the ledger's table: a restart after the upgrade still
answers retransmissions of replies made before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from ledger.migrate import private_sqlite
from ledger.writer.jobs import Call, Operation
from messages.outcome import Outcome
from switch.replies import Replay, ReplyCache
from switch.reply_store import BATCH_MAX, DIGEST_BYTES, Shared

log = logging.getLogger("medswitch.replies")
T = TypeVar("T")
PURGE_EVERY_S = 600.0
#: At most this long after a write, the thread checkpoints the file (its WAL fsynced, then the
#: database): how long a reply may be only in the operating system's memory.
SYNC_EVERY_S = 1.0
#: Rows in the order they were written (the rowid), no other index: nothing looks a key up in
#: the file (the start reads the newest rows; a key written again — handled afresh once its row
#: was no longer read — is read as its newest row), and an index would double a commit's cost
#: (some 60 against 30 µs of CPU for a commit of four replies, measured here).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS replies (message_key TEXT NOT NULL, response BLOB NOT NULL,"
    " created_at_us INTEGER NOT NULL, expires_at_us INTEGER NOT NULL)",
)
_INSERT = (
    "INSERT INTO replies (message_key, response, created_at_us, expires_at_us) VALUES (?, ?, ?, ?)"
)
_EARLIER = (
    "SELECT message_key, response, created_at_us, expires_at_us FROM response_cache"
    " WHERE expires_at_us > ?"
)


def replies_file(ledger_file: Path) -> Path:
    """The reply cache's file for the ledger file ``ledger_file``: beside it, named after it."""
    return ledger_file.with_name(f"{ledger_file.stem}-replies{ledger_file.suffix}")


class Writes(Protocol):
    """The ledger's writer (`ledger.writer.engine.Writer` or `ledger.writer.process`)."""

    async def submit(self, op: Operation) -> Any: ...


class Earlier(NamedTuple):
    """A reply of an earlier run, as read at start."""

    key: str
    row: bytes  # the request's digest, then the reply
    created_us: int


@dataclass(frozen=True, slots=True)
class ForgetLedgerReplies:
    """Delete the rows of the ledger's old ``response_cache`` table (copied into the replies
    file first). Runs on the ledger's writer (it pickles: the writer may be a process)."""

    def __call__(self, db: sqlite3.Connection) -> int:
        return int(db.execute("DELETE FROM response_cache").rowcount)


class ReplyFile:
    """The replies file's statements, on the one connection of the thread that runs them all."""

    def __init__(self, path: Path) -> None:
        private_sqlite(path)  # 0600, as the ledger's: replies carry card numbers and balances
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout = 10000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        for statement in SCHEMA:
            self.db.execute(statement)

    def adopt(self, ledger_file: Path, now_us: int) -> int:
        """Copy the unexpired rows of the ledger's old table here; how many there were."""
        ledger = sqlite3.connect(ledger_file, isolation_level=None)
        try:
            ledger.execute("PRAGMA busy_timeout = 10000")
            try:
                rows = ledger.execute(_EARLIER, (now_us,)).fetchall()
            except sqlite3.OperationalError:  # no such table: nothing to adopt
                return 0
        finally:
            ledger.close()
        if rows:
            with self._transaction():
                self.db.executemany(_INSERT, [(k, bytes(r), c, e) for k, r, c, e in rows])
        return len(rows)

    def load(self, now_us: int, rows_max: int) -> list[Earlier]:
        """The newest unexpired row of each key, of the newest ``rows_max`` rows, oldest first."""
        rows = self.db.execute(
            "SELECT message_key, response, created_at_us FROM replies"
            " WHERE expires_at_us > ? ORDER BY rowid DESC LIMIT ?",
            (now_us, rows_max),
        ).fetchall()
        newest: dict[str, Earlier] = {}
        for key, row, created in rows:
            newest.setdefault(key, Earlier(key, bytes(row), int(created)))
        return list(reversed(newest.values()))

    def store(self, rows: list[tuple[str, bytes]], now_us: int, expires_us: int) -> None:
        with self._transaction():
            for start in range(0, len(rows), BATCH_MAX):
                chunk = rows[start : start + BATCH_MAX]
                self.db.executemany(_INSERT, [(k, row, now_us, expires_us) for k, row in chunk])

    def purge(self, now_us: int, rows_max: int) -> int:
        """Delete the rows expired by ``now_us`` and all but the newest ``rows_max``."""
        with self._transaction():  # rows expire in the order they were written (one age)
            purged = self.db.execute(
                "DELETE FROM replies WHERE rowid < coalesce((SELECT rowid FROM replies"
                " WHERE expires_at_us >= ? ORDER BY rowid LIMIT 1),"
                " (SELECT max(rowid) + 1 FROM replies))",
                (now_us,),
            ).rowcount
            purged += self.db.execute(
                "DELETE FROM replies WHERE rowid <= (SELECT rowid FROM replies"
                " ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (rows_max,),
            ).rowcount
        return int(purged)

    def sync(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


class FileReplyCache(ReplyCache):
    """`ReplyCache` whose replies are durable in the replies file before they are sent."""

    def __init__(
        self,
        ledger_file: Path,
        ledger_writer: Writes,
        entries_max: int = 200_000,
        age_max_s: float = 24 * 3600.0,
    ) -> None:
        super().__init__(entries_max=entries_max, age_max_s=age_max_s)
        self._ledger_file, self._ledger_writer = ledger_file, ledger_writer
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="medswitch-replies")
        self._file: ReplyFile | None = None  # opened on the thread by the first job
        self._queued: list[tuple[str, bytes]] = []  # replies waiting for the next write
        self._group: Shared[None] | None = None  # resolved once they are written
        self._writing: Shared[None] | None = None  # the group being written on the thread
        self._flush_due = False
        self._loaded: asyncio.Future[None] | None = None
        with contextlib.suppress(RuntimeError):  # on a loop (the daemon's start): read now
            self._loaded = asyncio.get_running_loop().create_task(self._load())
        self._purged_at_s = time.monotonic() - PURGE_EVERY_S  # the first write purges
        self._sync_due: asyncio.TimerHandle | None = None  # the checkpoint scheduled

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
            adopted = await self._run(lambda file: file.adopt(self._ledger_file, now_us))
            rows = await self._run(lambda file: file.load(now_us, self._entries_max))
        except Exception as error:  # served from memory: the ledger stays idempotent
            log.error("response cache: earlier runs' replies not read: %s", error)
            return
        now_s = time.monotonic()
        for key, row, created_us in rows:
            if key in self._entries or key in self._pending:
                continue  # made in this run already (while the rows were read)
            at_s = now_s - (now_us - created_us) / 1_000_000
            self._entries[key] = (row[:DIGEST_BYTES], row[DIGEST_BYTES:], at_s)
        log.info("response cache: %d replies of earlier runs", len(rows))
        if adopted:  # copied here, committed: the ledger's old rows can go
            try:
                await self._ledger_writer.submit(Call(ForgetLedgerReplies(), synced=False))
            except Exception as error:  # copied again (kept) at the next start
                log.error("response cache: the ledger's old rows not deleted: %s", error)
            log.info("response cache: %d replies moved from the ledger's file", adopted)

    def finish(self, key: str, digest: bytes, reply: bytes | None) -> None:
        super().finish(key, digest, reply)
        if reply is None:
            return
        if self._group is None:  # the replies of this turn (and of any while a write runs)
            self._group = Shared(loop=asyncio.get_running_loop())
        self._queued.append((key, digest + reply))
        self._schedule()

    async def remember(self, replay: Replay | None, reply: Awaitable[bytes]) -> bytes:
        """The reply, once it is in the file too (a restart then still knows it)."""
        encoded = await super().remember(replay, reply)
        group = self._group  # the one its finish() joined: nothing ran in between
        if replay is not None and group is not None:
            with contextlib.suppress(Exception):  # logged once; the ledger stays idempotent
                await group  # shared by its replies, and not cancelled by one of them
        return encoded

    async def close(self) -> None:
        """Let the last writes finish, then close the file and its thread."""
        if self._loaded is not None and not self._loaded.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._loaded)
        for _ in range(3):  # the running write, then the queued ones (bounded: none come now)
            if self._writing is None and self._queued:
                self._flush()
            if self._writing is None:
                break
            with contextlib.suppress(Exception):
                await self._writing
        if self._sync_due is not None:  # closing checkpoints the file
            self._sync_due.cancel()
            self._sync_due = None
        with contextlib.suppress(Exception):
            await self._run(lambda file: file.close())
        self._thread.shutdown(wait=False)

    def _schedule(self) -> None:
        if not self._flush_due and self._writing is None:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        rows, group = self._queued, self._group
        self._queued, self._group = [], None
        if group is None or not rows:
            return
        now_us = _now_us()
        expires_us = now_us + int(self._age_max_s * 1_000_000)
        purge = time.monotonic() - self._purged_at_s > PURGE_EVERY_S
        if purge:
            self._purged_at_s = time.monotonic()
        rows_max = self._entries_max
        loop = asyncio.get_running_loop()

        def write() -> None:  # on the thread: the loop hears once, when the group is written
            error: Exception | None = None
            try:
                file = self._opened()
                file.store(rows, now_us, expires_us)
                if purge:
                    file.purge(now_us, rows_max)
            except Exception as failed:
                error = failed
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(self._written, group, error)

        self._writing = group
        self._thread.submit(write)

    def _written(self, group: Shared[None], error: Exception | None) -> None:
        self._writing = None
        if error is None:
            group.set_result(None)
        else:
            log.error("response cache write failed: %s", error)
            group.set_exception(error)
        if self._sync_due is None:  # to the disk within SYNC_EVERY_S (the next write may wait)
            self._sync_due = asyncio.get_running_loop().call_later(SYNC_EVERY_S, self._sync)
        if self._queued:
            self._schedule()

    def _sync(self) -> None:
        self._sync_due = None
        self._run(lambda file: file.sync()).add_done_callback(_logged)

    def _run(self, work: Callable[[ReplyFile], T]) -> asyncio.Future[T]:
        """``work`` on the file's thread (a future of the loop's: no task per write)."""

        return asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: work(self._opened())
        )

    def _opened(self) -> ReplyFile:
        """The file (opened on the thread by its first job)."""
        if self._file is None:
            self._file = ReplyFile(replies_file(self._ledger_file))
        return self._file


def _logged(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (error := done.exception()) is not None:
        log.error("response cache checkpoint failed: %s", error)


def _now_us() -> int:
    return time.time_ns() // 1000

"""The retransmission cache shared by every worker (DESIGN §6): the in-process
:class:`~switch.replies.ReplyCache` in front of the database's ``response_cache``.

A request missing from this worker's cache is looked up in the table (so a retransmission that
reaches another worker gets the original reply, byte for byte, or 94 for other content under
the same key); a reply is written there before it is sent. A row holds the request's digest
then the reply. Rows expire with the cache's age; a worker deletes expired rows now and then.

The cache has a connection of its own (not the pool's: no acquire and release per batch), kept
by :class:`~ledger.pg_connection.Healing`: lost, it is made again on the backoff schedule by a
later batch. One task, while anything is queued, sends what was queued while its last statement
ran as the next one (``= ANY``, ``unnest``; lookups and writes in one statement when both are
queued, which under ``bench_workers`` is seldom: a terminal's requests and its replies come in
turns). Every caller of a batch awaits one future for it (for lookups, a mapping of the keys
found): no task or future per request. That future is not cancelled by one caller's
cancellation: a cancelled exchange wakes when its batch is answered (one statement's time).

A batch that fails — its statement, or the connection down (a batch then fails at once until
the backoff allows the next connect attempt) — is logged once: its lookups answer "not found"
(the request is handled afresh, which the ledger's idempotent transfers keep safe) and its
replies are sent unwritten (a copy at another worker is then handled afresh too).

The connection's writes are committed without waiting for their WAL flush
(``synchronous_commit`` off for this connection, which writes only replies), as the SQLite
deployment's replies file is written without an fsync (``switch.reply_file``): a reply survives
the daemon's crash or restart at once, and the next synchronous commit — a ledger group commit,
a bill's transition, any worker's — flushes it, since the WAL is flushed in order. Were the
database's machine to fail in between, the retransmission is handled afresh, which the ledger's
idempotent transfers keep safe. Every commit of money stays synchronous. (Measured: each of
these commits waited for its own fsync, some 3.5 ms each on a busy disk, a third of the
database's WAL waits in ``bench_workers``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ledger.pg_bridge import APPLICATION, server_settings
from ledger.pg_connection import Healing, connector, lost
from messages.outcome import Outcome
from switch.replies import Replay, ReplyCache

log = logging.getLogger("medswitch.replies")
A = TypeVar("A")
R = TypeVar("R")
T = TypeVar("T")
DIGEST_BYTES = 16
BATCH_MAX = 500
PURGE_EVERY_S = 600.0

_COLUMNS = "message_key, response, created_at_us, expires_at_us"
_INSERT = (
    f"INSERT INTO response_cache ({_COLUMNS})"
    " SELECT u.k, u.r, $3, $4 FROM unnest($1::text[], $2::bytea[]) AS u(k, r)"
    " ON CONFLICT (message_key) DO NOTHING"
)
WRITE = _INSERT
READ = (
    "SELECT message_key, response FROM response_cache"
    " WHERE message_key = ANY($1::text[]) AND expires_at_us > $2"
)
#: A batch's writes and lookups in one round trip: the lookups see the table as it was when the
#: statement began (not this batch's writes: a key this worker writes is in its memory already).
BOTH = (
    f"WITH written AS ({_INSERT}) SELECT message_key, response FROM response_cache"
    " WHERE message_key = ANY($5::text[]) AND expires_at_us > $3"
)
PURGE = "DELETE FROM response_cache WHERE expires_at_us < $1"


class Batcher(Generic[A, R]):
    """Calls ``run`` with every argument queued while the previous call ran (at most
    ``batch_max``); each caller gets its own result, as a future (no coroutine per call), the
    calls run by one task while any are queued."""

    def __init__(
        self, run: Callable[[list[A]], Awaitable[Sequence[R]]], batch_max: int = BATCH_MAX
    ) -> None:
        self._run = run
        self._batch_max = batch_max
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    def __call__(self, argument: A) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((argument, future))
        if self._task is None or self._task.done():  # done: cancelled before its first step
            self._task = loop.create_task(self._drain())
            self._task.add_done_callback(self._ended)
        return future

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A task cancelled (even before its first step) fails what it left queued."""
        if self._task in (None, task):
            self._task = None
            queued, self._queue = self._queue, []
            for _, future in queued:
                if not future.done():
                    future.set_exception(ConnectionError("cancelled"))

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # one loop turn: let every ready caller queue up
            while self._queue:
                batch = self._queue[: self._batch_max]
                self._queue = self._queue[self._batch_max :]
                try:
                    results = await self._run([argument for argument, _ in batch])
                except Exception as error:  # each caller hears it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None  # no await since the queue was found empty


class Shared(asyncio.Future[T]):
    """A batch's outcome, awaited by each of its callers: a cancelled one of those does not
    cancel it for the others (in place of a shield per caller)."""

    def cancel(self, msg: Any | None = None) -> bool:
        return False


class SharedReplyCache(ReplyCache):
    """:class:`ReplyCache` whose replies are in ``response_cache`` before they are sent, and
    whose misses are looked up there (see the module)."""

    def __init__(self, link: Healing, age_max_s: float = 24 * 3600.0) -> None:
        super().__init__(age_max_s=age_max_s)
        self._link = link
        self._keys: list[str] = []  # lookups waiting for the next statement
        self._found: Shared[dict[str, bytes]] | None = None  # resolved by it
        self._rows: list[tuple[str, bytes]] = []  # replies waiting for the next statement
        self._written: Shared[None] | None = None  # resolved once they are written
        self._draining: asyncio.Task[None] | None = None
        self._purged_at = time.monotonic()
        self._closed = False  # closed: in memory only, the connection not made again

    @classmethod
    async def open(
        cls, dsn: str, schema: str | None = None, age_max_s: float = 24 * 3600.0
    ) -> SharedReplyCache:
        """The cache on a connection of its own to ``dsn`` (made again when lost)."""
        settings = server_settings(schema, f"{APPLICATION}-replies")
        settings["synchronous_commit"] = "off"  # this connection writes replies only
        connect = connector(dsn, settings)
        return cls(Healing(await connect(), connect), age_max_s=age_max_s)

    @property
    def link(self) -> Healing:
        return self._link

    async def earlier(self, key: str, digest: bytes) -> bytes | Outcome | None:
        found = await super().earlier(key, digest)
        if found is not None or self._closed:
            return found
        if self._found is None:
            self._found = Shared(loop=asyncio.get_running_loop())
            self._drain_soon()
        found_now = self._found
        self._keys.append(key)
        try:
            row = (await found_now).get(key)
        except Exception:  # logged once for the batch: the ledger stays idempotent
            row = None
        if row is None:
            # a copy that began here while the lookup ran: wait for its reply (no await
            # between this check and the caller's begin())
            return await super().earlier(key, digest)
        stored_digest, reply = row[:DIGEST_BYTES], row[DIGEST_BYTES:]
        self._entries[key] = (stored_digest, reply, time.monotonic())
        return reply if stored_digest == digest else Outcome.DUPLICATE

    def finish(self, key: str, digest: bytes, reply: bytes | None) -> None:
        super().finish(key, digest, reply)
        if reply is not None and not self._closed:
            if self._written is None:
                self._written = Shared(loop=asyncio.get_running_loop())
                self._drain_soon()
            self._rows.append((key, digest + reply))

    async def remember(self, replay: Replay | None, reply: Awaitable[bytes]) -> bytes:
        """The reply, once it is in the database too (a copy at another worker then finds it)."""
        encoded = await super().remember(replay, reply)
        written = self._written  # the batch its finish() joined: nothing ran in between
        if replay is not None and written is not None:
            with contextlib.suppress(Exception):  # logged once for the batch
                await written
        return encoded

    async def close(self) -> None:
        """Let the queued lookups and writes finish, then close the connection; later
        exchanges (one still running past the daemon's drain) use the memory alone."""
        self._closed = True
        if self._draining is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._draining)
        await self._link.close()

    def _drain_soon(self) -> None:
        if self._draining is None or self._draining.done():  # done: cancelled before its start
            self._draining = asyncio.get_running_loop().create_task(self._drain())
            self._draining.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        """A task cancelled (even before its first step) fails what it left queued, and the
        next caller starts another."""
        if self._draining in (None, task):
            self._draining = None
            found, written, self._found, self._written = self._found, self._written, None, None
            self._keys, self._rows = [], []
            _fail((found, written), ConnectionError("cancelled"))

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # one loop turn: let every ready caller queue up
            while self._found is not None or self._written is not None:
                keys, found, self._keys, self._found = self._keys, self._found, [], None
                rows, written, self._rows, self._written = self._rows, self._written, [], None
                await self._batch(keys, found, rows, written)
        finally:
            self._draining = None  # no await since the queues were found empty

    async def _batch(
        self,
        keys: list[str],
        found: Shared[dict[str, bytes]] | None,
        rows: list[tuple[str, bytes]],
        written: Shared[None] | None,
    ) -> None:
        """One statement for the lookups and writes of a batch; every caller hears how it
        went."""
        link = self._link
        now = _now_us()
        try:
            if not await link.ready():
                raise ConnectionError(f"PostgreSQL connection down: {link.last_error}")
            connection = link.connection
            if rows:
                expires = now + int(self._age_max_s * 1_000_000)
                written_keys = [key for key, _ in rows]
                blobs = [row for _, row in rows]
                if keys:
                    records = await connection.fetch(BOTH, written_keys, blobs, now, expires, keys)
                else:
                    records = []
                    await connection.execute(WRITE, written_keys, blobs, now, expires)
            else:
                records = await connection.fetch(READ, keys, now)
        except BaseException as error:  # cancelled too (the loop's end): nobody left waiting
            if isinstance(error, Exception) and lost(error, link.connection):
                link.drop()
            log.error(
                "response cache: %d lookups and %d writes failed: %s", len(keys), len(rows), error
            )
            failure = error if isinstance(error, Exception) else ConnectionError("cancelled")
            _fail((found, written), failure)
            if not isinstance(error, Exception):
                raise
            return
        if found is not None:
            found.set_result({record[0]: record[1] for record in records})
        if written is not None:
            written.set_result(None)
            if time.monotonic() - self._purged_at > PURGE_EVERY_S:
                self._purged_at = time.monotonic()
                with contextlib.suppress(Exception):  # a lost connection: the next batch sees it
                    await connection.execute(PURGE, now)


def _fail(futures: Sequence[Shared[Any] | None], failure: Exception) -> None:
    for future in futures:
        if future is not None and not future.done():
            future.set_exception(failure)
            future.exception()  # retrieved: nobody may be waiting (no log at collection)


def _now_us() -> int:
    return time.time_ns() // 1000

"""The retransmission cache shared by every worker (DESIGN §6): the in-process
:class:`~switch.replies.ReplyCache` in front of the database's ``response_cache``.

A request missing from this worker's cache is looked up in the table (so a retransmission that
reaches another worker gets the original reply, byte for byte, or 94 for other content under
the same key); a reply is written there before it is sent. Concurrent lookups and writes are
batched into one statement each (``= ANY``, ``unnest``). A row holds the request's digest then
the reply. Rows expire with the cache's age; a worker deletes expired rows now and then.

A write of replies is committed without waiting for its WAL flush (``synchronous_commit`` off
for that transaction alone), as the SQLite deployment's replies file is written without an
fsync (``switch.reply_file``): it survives the daemon's crash or restart at once, and the next
synchronous commit — a ledger group commit, a bill's transition, any worker's — flushes it,
since the WAL is flushed in order. Were the database's machine to fail in between, the
retransmission is handled afresh, which the ledger's idempotent transfers keep safe. Every
commit of money stays synchronous. (Measured: each of these commits waited for its own fsync,
some 3.5 ms each on a busy disk, a third of the database's WAL waits in ``bench_workers``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg  # type: ignore[import-untyped]

from messages.outcome import Outcome
from switch.replies import Replay, ReplyCache

log = logging.getLogger("medswitch.replies")
A = TypeVar("A")
R = TypeVar("R")
DIGEST_BYTES = 16
BATCH_MAX = 500
PURGE_EVERY_S = 600.0


class Batcher(Generic[A, R]):
    """Calls ``run`` with every argument queued while the previous call ran (at most
    ``batch_max``); each caller gets its own result."""

    def __init__(
        self, run: Callable[[list[A]], Awaitable[Sequence[R]]], batch_max: int = BATCH_MAX
    ) -> None:
        self._run = run
        self._batch_max = batch_max
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, argument: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((argument, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # one loop turn: let every ready caller queue up
        while self._queue:
            batch, self._queue = self._queue[: self._batch_max], self._queue[self._batch_max :]
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


class SharedReplyCache(ReplyCache):
    def __init__(self, pool: asyncpg.Pool, age_max_s: float = 24 * 3600.0) -> None:
        super().__init__(age_max_s=age_max_s)
        self._pool = pool
        self._lookup: Batcher[str, bytes | None] = Batcher(self._read)
        self._store: Batcher[tuple[str, bytes], None] = Batcher(self._write)
        self._writing: dict[str, asyncio.Future[None]] = {}
        self._purged_at = time.monotonic()

    async def earlier(self, key: str, digest: bytes) -> bytes | Outcome | None:
        found = await super().earlier(key, digest)
        if found is not None:
            return found
        try:
            row = await self._lookup(key)
        except (OSError, asyncpg.PostgresError) as error:
            log.error("response cache lookup failed: %s", error)  # the ledger stays idempotent
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
        if reply is not None:
            writing = asyncio.ensure_future(self._store((key, digest + reply)))
            self._writing[key] = writing
            writing.add_done_callback(lambda done: self._written(key, done))

    def _written(self, key: str, done: asyncio.Future[None]) -> None:
        if self._writing.get(key) is done and not done.cancelled() and done.exception() is None:
            del self._writing[key]  # nobody awaits it (remember() pops it first when it does)
        elif not done.cancelled() and done.exception() is not None:
            log.error("response cache write failed: %s", done.exception())
            self._writing.pop(key, None)

    async def remember(self, replay: Replay | None, reply: Awaitable[bytes]) -> bytes:
        """The reply, once it is in the database too (a copy at another worker then finds it)."""
        encoded = await super().remember(replay, reply)
        if replay is not None:
            writing = self._writing.pop(replay[0], None)
            if writing is not None:
                with contextlib.suppress(OSError, asyncpg.PostgresError):  # logged when done
                    await writing
        return encoded

    async def _read(self, keys: list[str]) -> list[bytes | None]:
        rows = await self._pool.fetch(
            "SELECT message_key, response FROM response_cache"
            " WHERE message_key = ANY($1::text[]) AND expires_at_us > $2",
            keys,
            _now_us(),
        )
        found = {row[0]: bytes(row[1]) for row in rows}
        return [found.get(key) for key in keys]

    async def _write(self, items: list[tuple[str, bytes]]) -> list[None]:
        now = _now_us()
        expires = now + int(self._age_max_s * 1_000_000)
        await self._pool.execute(
            "WITH unsynced AS (SELECT set_config('synchronous_commit', 'off', true))"
            " INSERT INTO response_cache (message_key, response, created_at_us, expires_at_us)"
            " SELECT u.k, u.r, $3, $4 FROM unnest($1::text[], $2::bytea[]) AS u(k, r), unsynced"
            " ON CONFLICT (message_key) DO NOTHING",
            [key for key, _ in items],
            [row for _, row in items],
            now,
            expires,
        )
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            self._purged_at = time.monotonic()
            with contextlib.suppress(asyncpg.PostgresError):
                await self._pool.execute("DELETE FROM response_cache WHERE expires_at_us < $1", now)
        return [None] * len(items)


def _now_us() -> int:
    return time.time_ns() // 1000

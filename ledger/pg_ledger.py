"""The ledger on PostgreSQL through asyncpg, group-committed.

Callers' jobs queue on the event loop; a writer task takes everything waiting (bounded) as one
batch on its own connection: the touched accounts and transfer ids read, the batch decided by the
same pure state machine as the model, then written with one set-based statement (``unnest``). A
batch of postings, calls and reads runs with no transaction open: its read locks nothing and its
write, its own transaction, checks what the batch decided on (``ledger.pg_write``); any other
batch, or one whose reads changed before its write, runs in one transaction whose read locks the
accounts it decides on in id order (``FOR UPDATE``). Several processes may share the database: a
changed read, a unique-id race or a deadlock retries the batch (bounded). Each caller's future
resolves only after the commit.

A card debit's bill completes in the batch that posts the debit (``post_and_call``: the medical
store's write on the writer's connection, with the bill's pooled share), so an advice is one
commit shared with the batch's other jobs, never one of its own (``ledger.pg_post``).

A writer's connection heals (``ledger.pg_connection``): a batch whose connection is lost fails
with :class:`LedgerUnavailable` (its outcome unknown: answered 96, safe to retry), and the
writer connects again before its next batch, no more often than its backoff allows; batches
meanwhile fail at once, and :meth:`PgLedger.health` says ``RESTARTING``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ledger.core import (
    Account,
    AccountResult,
    Balance,
    CloseResult,
    Health,
    Ledger,
    LedgerUnavailable,
    OfflineRecord,
    Opening,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
    Transfer,
    TransferResult,
)
from ledger.migrate import upgrade_postgres
from ledger.pg_bridge import APPLICATION, server_settings
from ledger.pg_calls import LedgerCall
from ledger.pg_connection import Healing, connector, lost
from ledger.pg_fold import BatchConflict, NeedsTransaction
from ledger.pg_statements import Job, PgStore
from ledger.writer.jobs import PostedThenCalled, Postings, briefed

RETRIES_MAX = 3
_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,  # a write with no transaction open found its reads changed
    BatchConflict,
)

BATCH_MAX = 1024  # jobs one writer connection commits together
WATCH_S = 1.0  # an idle writer looks at its connection this often
CALL_TIMEOUT_S = 30.0  # a call from another thread waits this long at most


class PgLedger(Ledger):
    """:class:`Ledger` on PostgreSQL. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, links: list[Healing], batch_max: int) -> None:
        self._links = links
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._batch_max = batch_max
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._write(link)) for link in links]

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        schema: str | None = None,
        writers: int = 1,
        batch_max: int = BATCH_MAX,
        migrate: bool = True,
    ) -> PgLedger:
        """Connect `writers` connections (each group-commits its own batches) and migrate."""
        # Plan each statement for its actual parameters and the tables' current size: a generic
        # plan made while `transfers` was small keeps scanning it sequentially once it is large.
        connect = connector(dsn, server_settings(schema, f"{APPLICATION}-ledger"))
        connections: list[asyncpg.Connection] = []
        try:
            for _ in range(writers):
                connections.append(await connect())
            if migrate:
                await upgrade_postgres(connections[0])
        except BaseException:
            for connection in connections:
                await connection.close()
            raise
        return cls([Healing(c, connect) for c in connections], batch_max)

    def health(self) -> Health:
        """``RESTARTING`` while a writer's connection is lost and not yet made again."""
        if self._closed:
            return Health.WRITER_ENDED
        return Health.OK if all(link.up for link in self._links) else Health.RESTARTING

    async def _submit(self, kind: str, *args: Any) -> Any:
        if self._closed:
            raise LedgerUnavailable("ledger is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Job(kind, args, future))
        return await future

    async def _write(self, link: Healing) -> None:
        store = PgStore(link.connection)
        while True:
            first = await self._next(link)
            if first is None:
                self._queue.put_nowait(None)  # for the other writers
                return
            batch = [first]
            # One loop turn, no longer: a deliberate gathering window was measured and did not
            # pay (a worker's batch already holds nearly all its POS; bench/HISTORY.md, session 6).
            await asyncio.sleep(0)  # let every caller that is ready queue up
            while len(batch) < self._batch_max and not self._queue.empty():
                job = self._queue.get_nowait()
                if job is None:
                    self._queue.put_nowait(None)  # let this batch finish, then stop
                    break
                batch.append(job)
            if not await link.ready():
                _fail(batch, LedgerUnavailable("PostgreSQL connection lost; reconnecting"))
                continue
            store.conn = link.connection
            if not await self._run_batch(store, batch):
                link.drop()

    async def _next(self, link: Healing) -> Job | None:
        """The next job. Waiting for it, the writer looks at its connection every WATCH_S
        and, lost, connects again on the backoff schedule whether or not jobs come: readiness
        reports the ledger down meanwhile, so traffic may not come back to trigger it."""
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            wait_s = WATCH_S if link.up or await link.ready() else link.retry_in_s
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._queue.get(), timeout=wait_s)

    async def _run_batch(self, store: PgStore, batch: list[Job], guarded: bool = False) -> bool:
        """The batch committed, or its callers told why not; False when the connection was
        lost (every caller then gets LedgerUnavailable: the outcome is unknown). A batch that
        fails runs again job by job, ``guarded``: a ``post_and_call``'s call in a savepoint of
        its own, so that a call failing in SQL leaves its debit posted (``ledger.pg_post``)."""
        for attempt in range(RETRIES_MAX):
            try:
                await self._attempt(store, batch, guarded, free=attempt == 0)
            except _RETRYABLE:
                store.known.forget()  # perhaps what went stale
                if attempt + 1 < RETRIES_MAX:
                    continue
                error: BaseException | None = None
            except Exception as exc:
                store.known.forget()  # the outcome perhaps unknown
                if lost(exc, store.conn):
                    _fail(batch, LedgerUnavailable(f"PostgreSQL connection lost: {exc}"))
                    return False
                error = exc
            else:
                for job in batch:
                    if not job.future.done():
                        job.future.set_result(job.value)
                return True
            break
        if not guarded:  # find the culprit: every job again on its own
            for index, job in enumerate(batch):
                if not await self._run_batch(store, [job], guarded=True):
                    _fail(batch[index + 1 :], LedgerUnavailable("PostgreSQL connection lost"))
                    return False
            return True
        if not batch[0].future.done():
            batch[0].future.set_exception(error or RuntimeError("retries exhausted"))
        return True

    @staticmethod
    async def _attempt(store: PgStore, batch: list[Job], guarded: bool, *, free: bool) -> None:
        """The batch once: with no transaction open when it may and ``free`` (the first
        attempt: ``ledger.pg_write``, its reads lock nothing, its write checks them and is its
        own transaction), else — or when it turns out to need one — in one, its reads locking
        what it decides on: a batch whose reads changed before its write runs again locked,
        so contention on an account costs one attempt more, never a run of them."""
        if free and not guarded and store.may_run_free(batch):
            try:
                await store.execute(batch, free=True)
                return
            except NeedsTransaction:
                pass
        store.known.forget()  # what this batch writes is learnt once it commits
        async with store.conn.transaction():
            await store.execute(batch, guarded=guarded)
        store.known.commit()

    async def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        result: list[AccountResult] = await self._submit("open_accounts", list(accounts))
        return result

    async def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        result: list[CloseResult] = await self._submit("close_accounts", list(ids))
        return result

    async def post(
        self, transfers: Sequence[Transfer], *, linked: bool = False
    ) -> list[TransferResult]:
        result: list[TransferResult] = await self._submit("post", list(transfers), linked)
        return result

    async def post_and_record(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord] = (),
        *,
        opening: Opening | None = None,
    ) -> tuple[list[TransferResult], dict[str, int]]:
        result: tuple[list[TransferResult], dict[str, int]] = await self._submit(
            "post_and_record", list(transfers), list(records), opening
        )
        return result

    async def post_and_call(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord],
        opening: Opening,
        call: LedgerCall,
        postings: Postings,
        likely: Sequence[Transfer] = (),
        brief: Callable[[Any], Any] | None = None,
    ) -> PostedThenCalled[Any]:
        """:meth:`post_and_record`, then — when every transfer is in the ledger (posted now or
        before) — ``call`` (a write of another store on this database, with the others of its
        kind in the batch) and the postings its value names, all in one transaction and one
        commit: a card debit, the bill it completes and the bill's pooled share
        (``ledger.pg_post``). ``likely``: the postings the call will probably name, read with
        the debit's (a guess that misses costs a read); ``brief``: what of the call's value the
        caller reads (``SqliteLedger.post_and_call``'s)."""
        found: PostedThenCalled[Any] = await self._submit(
            "post_and_call", list(transfers), list(records), opening, call, postings, list(likely)
        )
        return PostedThenCalled(found.posted, briefed(brief, found.called))

    async def call(self, call: LedgerCall) -> Any:
        """``call`` (a write of another store on this database: a bill's transition) in a
        batch, with the others of its kind, sharing the batch's commit; its value once
        committed, or the exception that refused it (nothing of it written)."""
        found = await self._submit("call", call)
        if isinstance(found, BaseException):
            raise found
        return found

    def call_from_thread(self, call: LedgerCall, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """:meth:`call` for a synchronous caller on another thread (the HIS API's submission
        runs in one): its value once committed, or its exception; TimeoutError after
        ``timeout_s`` (the call may still commit: its write is idempotent by its key)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("call_from_thread on the ledger's own loop: await call()")
        future = asyncio.run_coroutine_threadsafe(self.call(call), self._loop)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("the ledger's writer did not answer in time") from None

    async def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        result: dict[str, Balance] = await self._submit("balances", list(ids))
        return result

    async def all_balances(self) -> list[Balance]:
        result: list[Balance] = await self._submit("all_balances")
        return result

    async def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        result: dict[str, PostedTransfer] = await self._submit("lookup_transfers", list(ids))
        return result

    async def history(self, account: str, limit: int = 100) -> list[PostedTransfer]:
        result: list[PostedTransfer] = await self._submit("history", account, limit)
        return result

    async def add_review(self, item: ReviewItem) -> bool:
        return bool(await self._submit("add_review", item))

    async def reviews(self) -> list[ReviewItem]:
        result: list[ReviewItem] = await self._submit("reviews")
        return result

    async def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        result: list[bool] = await self._submit("record_offline", list(records))
        return result

    async def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        result: list[OfflineRecord] = await self._submit("offline_records", terminal_id, batch_no)
        return result

    async def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        result: dict[tuple[str, str], list[tuple[int, str]]] = await self._submit(
            "offline_counters", list(cards)
        )
        return result

    async def queue_reversal(self, item: QueuedReversal) -> bool:
        return bool(await self._submit("queue_reversal", item))

    async def queued_reversals(self) -> list[QueuedReversal]:
        result: list[QueuedReversal] = await self._submit("queued_reversals")
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks)
        for link in self._links:
            with contextlib.suppress(Exception):
                await link.close()


def _fail(jobs: Sequence[Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)

"""The ledger on PostgreSQL through asyncpg, group-committed.

Callers' jobs queue on the event loop; a writer task takes everything waiting (bounded) as one
batch and runs it in one transaction on its own connection: the touched accounts are locked in id
order (``FOR UPDATE``), the transfer ids looked up, the batch decided by the same pure state machine
as the model, then written with one set-based INSERT and one set-based UPDATE (``unnest``). Several
processes may share the database: account locks serialise them, a unique-id race or a deadlock
retries the batch (bounded). Each caller's future resolves only after COMMIT.

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
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ledger import sql_rows as rows
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
from ledger.pg_connection import CONNECT_TIMEOUT_S, Healing, lost
from ledger.pg_post import POSTS, LedgerCall, decide_offline, held_of, post_jobs
from ledger.sqlite_offline import OFFLINE_COLUMNS
from ledger.state import (
    AccountState,
    Remembered,
    check_open,
)
from ledger.writer.jobs import PostedThenCalled, Postings

RETRIES_MAX = 3
#: Jobs that only read (run last in their batch).
READS = frozenset(
    {"balances", "all_balances", "lookup_transfers", "history", "reviews", "offline_records",
     "offline_counters", "queued_reversals"}
)  # fmt: skip
_NOT_ONE_BY_ONE = READS | POSTS | {"open_accounts", "call"}  # what `execute` runs in phases
_RETRYABLE = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError)

BATCH_MAX = 1024  # jobs one writer connection commits together
WATCH_S = 1.0  # an idle writer looks at its connection this often
_UPSERT_OFFLINE = (
    "INSERT INTO offline_records (psam_terminal_no, psam_serial, terminal_id, batch_no,"
    " application_serial, purse, amount_fen, tac, card_datetime, transfer_id, card_counter,"
    " received_at_us) SELECT u.p, u.s, u.t, u.b, u.a, u.pu, u.am, u.tac, u.cd, u.tid, u.cc, $12"
    " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::text[],"
    " $7::bigint[], $8::text[], $9::text[], $10::text[], $11::int[])"
    " WITH ORDINALITY AS u(p, s, t, b, a, pu, am, tac, cd, tid, cc, n) ORDER BY u.n"
    " ON CONFLICT (psam_terminal_no, psam_serial) DO UPDATE SET"
    " terminal_id = excluded.terminal_id, batch_no = excluded.batch_no,"
    " application_serial = excluded.application_serial, purse = excluded.purse,"
    " amount_fen = excluded.amount_fen, tac = excluded.tac,"
    " card_datetime = excluded.card_datetime, transfer_id = excluded.transfer_id,"
    " card_counter = excluded.card_counter, received_at_us = excluded.received_at_us"
)
_HELD_OFFLINE = (
    "SELECT o.psam_terminal_no, o.psam_serial, o.transfer_id IS NOT NULL, o.terminal_id,"
    " o.batch_no FROM offline_records AS o"
    " JOIN unnest($1::text[], $2::bigint[]) AS k(p, s)"
    " ON o.psam_terminal_no = k.p AND o.psam_serial = k.s"
    " ORDER BY o.psam_terminal_no, o.psam_serial FOR UPDATE OF o"
)


class _Job:
    __slots__ = ("args", "future", "kind", "value")

    def __init__(self, kind: str, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.kind, self.args, self.future = kind, args, future
        self.value: Any = None


class PgStore:
    """The statements, run by the writer inside the batch's transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.conn = connection

    async def execute(self, batch: Sequence[_Job], *, guarded: bool = False) -> None:
        """The batch in phases, each as few statements as it can be: accounts opened, then
        every posting together (one lock, one lookup, one INSERT, one UPDATE), then the other
        writes in order, then the reads (balances merged into one query) — which see all of
        it. Jobs in one batch are concurrent (their callers had not heard back), so any order
        is one they could have had; a caller's own jobs keep theirs (a record behind its
        posting, a read behind both)."""
        posts = [job for job in batch if job.kind in POSTS]
        calls = [job for job in batch if job.kind == "call"]
        opening = [job for job in batch if job.kind == "open_accounts"]
        reads = [job for job in batch if job.kind in READS]
        writes = [job for job in batch if job.kind not in _NOT_ONE_BY_ONE]
        for job in opening:
            job.value = await self.open_accounts(*job.args)
        if posts or calls:
            await post_jobs(self.conn, posts, calls=calls, guarded=guarded)
        for job in writes:
            job.value = await getattr(self, job.kind)(*job.args)
        balances = [job for job in reads if job.kind == "balances"]
        if balances:
            found = await self.balances(sorted({a for job in balances for a in job.args[0]}))
            for job in balances:
                job.value = {a: found[a] for a in job.args[0] if a in found}
        for job in reads:
            if job.kind != "balances":
                job.value = await getattr(self, job.kind)(*job.args)

    async def load_accounts(self, ids: Sequence[str], *, lock: bool) -> dict[str, AccountState]:
        sql = f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1::text[]) ORDER BY id"
        found = await self.conn.fetch(sql + (" FOR UPDATE" if lock else ""), list(ids))
        return {row[0]: rows.account_state(row) for row in found}

    async def load_remembered(self, ids: Sequence[str]) -> dict[str, Remembered]:
        sql = f"SELECT {rows.TRANSFER_COLUMNS} FROM transfers WHERE id = ANY($1::text[])"
        return {row[0]: rows.remembered(row) for row in await self.conn.fetch(sql, list(ids))}

    async def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        existing = await self.load_accounts(sorted({a.id for a in accounts}), lock=True)
        results = []
        for account in accounts:
            result = check_open(account, existing.get(account.id))
            if result is AccountResult.CREATED:
                existing[account.id] = AccountState.opened(account)
                await self.conn.execute(
                    "INSERT INTO accounts (id, kind, owner, flags, debits_posted, credits_posted,"
                    " closed) VALUES ($1, $2, $3, $4, 0, 0, false)",
                    account.id,
                    account.kind.value,
                    account.owner,
                    int(account.flags),
                )
            results.append(result)
        return results

    async def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        results = []
        for account in ids:
            sql = "SELECT closed FROM accounts WHERE id = $1 FOR UPDATE"
            closed = await self.conn.fetchval(sql, account)
            if closed is None:
                results.append(CloseResult.NOT_FOUND)
            elif closed:
                results.append(CloseResult.ALREADY_CLOSED)
            else:
                await self.conn.execute("UPDATE accounts SET closed = true WHERE id = $1", account)
                results.append(CloseResult.CLOSED)
        return results

    async def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        found = await self.load_accounts(list(ids), lock=False)
        return {a: state.balance() for a, state in found.items()}

    async def all_balances(self) -> list[Balance]:
        found = await self.conn.fetch(f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts ORDER BY id")
        return [rows.balance(row) for row in found]

    async def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        sql = f"SELECT {rows.TRANSFER_COLUMNS}, seq FROM transfers WHERE id = ANY($1::text[])"
        return {row[0]: rows.posted(row) for row in await self.conn.fetch(sql, list(ids))}

    async def history(self, account: str, limit: int) -> list[PostedTransfer]:
        sql = (
            f"SELECT {rows.TRANSFER_COLUMNS}, seq, posted_at_us FROM ("
            f" SELECT * FROM (SELECT {rows.TRANSFER_COLUMNS}, seq, posted_at_us FROM transfers"
            f"  WHERE debit_account_id = $1 AND result = 0 ORDER BY seq DESC LIMIT $2) AS d"
            " UNION ALL"
            f" SELECT * FROM (SELECT {rows.TRANSFER_COLUMNS}, seq, posted_at_us FROM transfers"
            f"  WHERE credit_account_id = $1 AND result = 0 ORDER BY seq DESC LIMIT $2) AS c"
            f") AS both_sides ORDER BY seq DESC LIMIT $2"
        )
        found = await self.conn.fetch(sql, account, rows.clamp_limit(limit))
        return [rows.posted_timed(row) for row in reversed(found)]

    async def add_review(self, item: ReviewItem) -> bool:
        status = await self.conn.execute(
            "INSERT INTO review_items (key, reason, reference, amount_fen, detail, created_at_us)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
            item.key,
            item.reason,
            item.reference,
            item.amount_fen,
            item.detail,
            rows.now_us(),
        )
        return bool(status == "INSERT 0 1")

    async def reviews(self) -> list[ReviewItem]:
        sql = f"SELECT {rows.REVIEW_COLUMNS} FROM review_items ORDER BY seq"
        return [rows.review_item(row) for row in await self.conn.fetch(sql)]

    async def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        """One SELECT … FOR UPDATE of what is on file, one decision per record in order
        (offline_decision, as every ledger), one upsert of the rows to write: a debit written
        twice in one call is written once, where it was first written, with its last values."""
        if not records:
            return []
        keys = list(dict.fromkeys((r.psam_terminal_no, r.psam_serial) for r in records))
        found = await self.conn.fetch(_HELD_OFFLINE, [k[0] for k in keys], [k[1] for k in keys])
        results, writes = decide_offline(held_of(found), records)
        if writes:
            columns = zip(*writes, strict=True)
            await self.conn.execute(_UPSERT_OFFLINE, *(list(c) for c in columns), rows.now_us())
        return results

    async def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        sql = (
            "SELECT card_counter, card_datetime FROM offline_records"
            " WHERE application_serial = $1 AND purse = $2 AND transfer_id IS NOT NULL"
            " AND card_counter IS NOT NULL ORDER BY card_counter"
        )
        found: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for card in dict.fromkeys(cards):
            found[card] = [(int(r[0]), r[1]) for r in await self.conn.fetch(sql, *card)]
        return found

    async def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        sql = (
            f"SELECT {OFFLINE_COLUMNS} FROM offline_records"
            " WHERE terminal_id = $1 AND batch_no = $2 ORDER BY seq"
        )
        found = await self.conn.fetch(sql, terminal_id, batch_no)
        return [OfflineRecord(*row) for row in found]

    async def queue_reversal(self, item: QueuedReversal) -> bool:
        status = await self.conn.execute(
            "INSERT INTO reversal_queue (key, bank_id, reference, amount_fen, created_at_us)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
            item.key,
            item.bank_id,
            item.reference,
            item.amount_fen,
            rows.now_us(),
        )
        return bool(status == "INSERT 0 1")

    async def queued_reversals(self) -> list[QueuedReversal]:
        sql = f"SELECT {rows.REVERSAL_COLUMNS} FROM reversal_queue ORDER BY seq"
        return [rows.queued_reversal(row) for row in await self.conn.fetch(sql)]


class PgLedger(Ledger):
    """:class:`Ledger` on PostgreSQL. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, links: list[Healing], batch_max: int) -> None:
        self._links = links
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._batch_max = batch_max
        self._closed = False
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
        settings = server_settings(schema, f"{APPLICATION}-ledger")

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(dsn, server_settings=settings, timeout=CONNECT_TIMEOUT_S)

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
        self._queue.put_nowait(_Job(kind, args, future))
        return await future

    async def _write(self, link: Healing) -> None:
        store = PgStore(link.connection)
        while True:
            first = await self._next(link)
            if first is None:
                self._queue.put_nowait(None)  # for the other writers
                return
            batch = [first]
            await asyncio.sleep(0)  # one loop turn: let every caller that is ready queue up
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

    async def _next(self, link: Healing) -> _Job | None:
        """The next job. Waiting for it, the writer looks at its connection every WATCH_S
        and, lost, connects again on the backoff schedule whether or not jobs come: readiness
        reports the ledger down meanwhile, so traffic may not come back to trigger it."""
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            wait_s = WATCH_S if link.up or await link.ready() else link.retry_in_s
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._queue.get(), timeout=wait_s)

    async def _run_batch(self, store: PgStore, batch: list[_Job], guarded: bool = False) -> bool:
        """The batch committed, or its callers told why not; False when the connection was
        lost (every caller then gets LedgerUnavailable: the outcome is unknown). A batch that
        fails runs again job by job, ``guarded``: a ``post_and_call``'s call in a savepoint of
        its own, so that a call failing in SQL leaves its debit posted (``ledger.pg_post``)."""
        for attempt in range(RETRIES_MAX):
            try:
                async with store.conn.transaction():
                    await store.execute(batch, guarded=guarded)
            except _RETRYABLE:
                if attempt + 1 < RETRIES_MAX:
                    continue
                error: BaseException | None = None
            except Exception as exc:
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
    ) -> tuple[list[TransferResult], dict[str, Balance]]:
        result: tuple[list[TransferResult], dict[str, Balance]] = await self._submit(
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
    ) -> PostedThenCalled[Any]:
        """:meth:`post_and_record`, then — when every transfer is in the ledger (posted now or
        before) — ``call`` (a write of another store on this database, with the others of its
        kind in the batch) and the postings its value names, all in one transaction and one
        commit: a card debit, the bill it completes and the bill's pooled share
        (``ledger.pg_post``). ``likely``: the postings the call will probably name, read with
        the debit's (a guess that misses costs a read)."""
        found: PostedThenCalled[Any] = await self._submit(
            "post_and_call", list(transfers), list(records), opening, call, postings, list(likely)
        )
        return found

    async def call(self, call: LedgerCall) -> Any:
        """``call`` (a write of another store on this database: a bill's transition) in a
        batch, with the others of its kind, sharing the batch's commit; its value once
        committed, or the exception that refused it (nothing of it written)."""
        found = await self._submit("call", call)
        if isinstance(found, BaseException):
            raise found
        return found

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


def _fail(jobs: Sequence[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)

"""The ledger on embedded SQLite: WAL, synchronous=FULL, one writer thread, group commit.

Every operation (reads too, so that a caller always reads its own writes) goes through the
writer's queue; consecutive posts of a batch are decided together with one SELECT of the accounts
and one of the ids they touch, then written with one multi-row statement per table — the raw
``sqlite3`` driver, as DESIGN §6 asks, and few calls into it: each releases the GIL, and taking
it back from the event loop costs both threads. Results reach callers only after the batch's
COMMIT returned. On the daemon the medical store's writes run on this writer too (`CALL` jobs,
see `run_calls`): one writer per file, one commit per group, no wait for SQLite's write lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ledger import sql_rows as rows
from ledger.core import (
    Account,
    AccountResult,
    Balance,
    CloseResult,
    Ledger,
    OfflineRecord,
    Opening,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
    Transfer,
    TransferResult,
)
from ledger.group_commit import (
    BATCH_MAX,
    CALL,
    CALL_POST,
    POST_CALL_POST,
    WINDOW_S,
    Deliver,
    Job,
    Tainted,
    Writer,
    run_calls,
)
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_offline import OfflineRecords
from ledger.state import (
    AccountState,
    Batch,
    Remembered,
    before_and_missing,
    check_open,
    needed_ids,
    open_missing,
)
from ledger.writer_process import ProcessWriter

_INSERT_TRANSFERS = (
    "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount_fen, code,"
    " reference, result, posted_at_us) VALUES {values}"
)
#: The accounts a batch opened (inserted with their totals) and those whose totals changed.
_WRITE_ACCOUNTS = (
    "INSERT INTO accounts (id, kind, owner, flags, debits_posted, credits_posted, closed)"
    " VALUES {values} ON CONFLICT (id) DO UPDATE SET debits_posted = excluded.debits_posted,"
    " credits_posted = excluded.credits_posted"
)
_INSERT_ACCOUNT = (
    "INSERT INTO accounts (id, kind, owner, flags, debits_posted, credits_posted, closed)"
    " VALUES (?, ?, ?, ?, 0, 0, 0)"
)
T = TypeVar("T")
Posted = tuple[list[TransferResult], dict[str, Balance]]  # a post_and_record's value
_POSTS = frozenset({"post", "post_and_record"})  # decided together by SqliteStore.post
_CALLS = frozenset({CALL, CALL_POST})


def _follow_ups(calls: Sequence[Job]) -> list[tuple[Job, Job]]:
    """Each `CALL_POST` that did not fail, with a ``post_and_record`` job of the transfers its
    value names (and the accounts they may need opened)."""
    followed = []
    for job in calls:
        if job.kind == CALL_POST and job.error is None:
            transfers, opening = job.args[1](job.value)
            post = Job("post_and_record", (list(transfers), [], opening), None, None)
            followed.append((job, post))
    return followed


def _account_row(account: Account) -> tuple[str, str, str, int]:
    return (account.id, account.kind.value, account.owner, int(account.flags))


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection as the ledger uses it: autocommit mode (explicit BEGIN), WAL, FULL sync;
    room for a prepared statement per row count of the multi-row statements (`with_values`)."""
    connection = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=1024,
        factory=rows.WriterConnection,
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


class SqliteStore(OfflineRecords):
    """The statements, run on the writer thread inside the batch's transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        assert self.db is not None, "not connected"
        return self.db

    def connect(self) -> None:
        self.db = connect(self.path)

    def disconnect(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def writer(
        self,
        *,
        batch_max: int = BATCH_MAX,
        window_s: float = WINDOW_S,
        deliver: Deliver | None = None,
    ) -> Writer:
        """The `Writer` that runs this store's batches (a thread of the daemon's, or the one
        thread of `ledger.writer_process`'s child, which delivers its own way)."""
        return Writer(
            "ledger-sqlite-writer",
            self.connect,
            self.execute,
            self.commit,
            self.rollback,
            self.disconnect,
            batch_max=batch_max,
            window_s=window_s,
            deliver=deliver,
        )

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def execute(self, batch: Sequence[Job]) -> None:
        """The batch in one transaction; again with a savepoint per call when a call raised
        after writing (`Tainted`: rare), its values reset and what it wrote rolled back."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._execute(batch, savepoints=False)
        except Tainted:
            self.conn.execute("ROLLBACK")
            self.conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                job.value, job.error = None, None
            self._execute(batch, savepoints=True)

    def _execute(self, batch: Sequence[Job], *, savepoints: bool) -> None:
        followed: list[tuple[Job, Job]] = []
        if any(job.kind in _CALLS for job in batch):  # the medical store's writes: first
            calls = [job for job in batch if job.kind in _CALLS]
            run_calls(self.conn, calls, savepoints=savepoints)
            followed = _follow_ups(calls)  # the postings a call's value names, then
            batch = [post for _, post in followed] + [j for j in batch if j.kind not in _CALLS]
        chained: list[tuple[Job, Job]] = []
        if any(job.kind == POST_CALL_POST for job in batch):  # their posts with the others
            chained = [
                (job, Job("post_and_record", job.args[:3], None, None))
                for job in batch
                if job.kind == POST_CALL_POST
            ]
            rest = [job for job in batch if job.kind != POST_CALL_POST]
            batch = [post for _, post in chained] + rest
        start = 0
        while start < len(batch):
            end = start
            while end < len(batch) and batch[end].kind in _POSTS:
                end += 1
            if end > start:  # the chained posts are the first run
                self.post(batch[start:end], chained if start == 0 else (), savepoints)
                start = end
            else:
                job = batch[start]
                job.value = getattr(self, job.kind)(*job.args)
                start += 1
        for call, post in followed:
            call.value = (call.value, post.value[0])

    def _chained_calls(
        self, chained: Sequence[tuple[Job, Job]], savepoints: bool
    ) -> dict[int, Job]:
        """The calls of `POST_CALL_POST` jobs whose posts are all in the ledger (as decided,
        not yet written: the calls write other tables), run now; by the job's index."""
        calls: dict[int, Job] = {}
        for n, (job, post) in enumerate(chained):
            if all(result.ok for result in post.value[0]):
                calls[n] = Job(CALL_POST, job.args[3:5], None, None)
        run_calls(self.conn, list(calls.values()), savepoints=savepoints)
        return calls

    def _select_in(self, sql: str, ids: Sequence[str]) -> list[Any]:
        found: list[Any] = []
        for chunk in rows.chunks(ids):
            marks = ",".join("?" * len(chunk))
            found.extend(self.conn.execute(sql.format(marks=marks), tuple(chunk)).fetchall())
        return found

    def load_accounts(self, ids: Sequence[str]) -> dict[str, AccountState]:
        sql = f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts WHERE id IN ({{marks}})"
        return {row[0]: rows.account_state(row) for row in self._select_in(sql, ids)}

    def load_remembered(self, ids: Sequence[str]) -> dict[str, Remembered]:
        sql = f"SELECT {rows.TRANSFER_COLUMNS} FROM transfers WHERE id IN ({{marks}})"
        return {row[0]: rows.remembered(row) for row in self._select_in(sql, ids)}

    def post(
        self,
        jobs: Sequence[Job],
        chained: Sequence[tuple[Job, Job]] = (),
        savepoints: bool = False,
    ) -> None:
        """Consecutive ``post`` and ``post_and_record`` jobs, decided together: one SELECT of
        the accounts and one of the ids, one upsert of the accounts opened or changed and one
        INSERT of the transfers; the records of every ``post_and_record`` then, behind every
        posting, in one go. With ``chained`` (`POST_CALL_POST` jobs, their posts first among
        ``jobs``): their calls run once those posts are decided, and the postings the calls
        name are decided in the same `Batch` and written with the others."""
        batch = Batch({}, {})
        opened = self._decide(batch, jobs)
        if chained:
            calls = self._chained_calls(chained, savepoints)
            followed = _follow_ups(list(calls.values()))
            opened += self._decide(batch, [post for _, post in followed])
            for call, post in followed:
                call.value = (call.value, post.value[0])
            for n, (job, post) in enumerate(chained):
                ran = calls.get(n)
                outcome = None if ran is None else ran.error or ran.value
                job.value = (post.value, outcome)
        changed = dict.fromkeys([a.id for a in opened] + list(batch.dirty))
        states = [rows.account_row(batch.accounts[a]) for a in changed]
        rows.execute_values(self.conn, _WRITE_ACCOUNTS, states)
        at_us = rows.now_us()
        written = [rows.transfer_row(r, at_us) for r in batch.written]
        rows.execute_values(self.conn, _INSERT_TRANSFERS, written)
        on_file = [r for job in jobs if job.kind == "post_and_record" for r in job.args[1]]
        if on_file:
            self.record_offline(on_file)

    def _decide(self, batch: Batch, jobs: Sequence[Job]) -> list[Account]:
        """Decide ``jobs`` in ``batch``, loading first the accounts and ids it does not hold;
        the accounts opened on the way."""
        ids, account_ids = needed_ids(t for job in jobs for t in job.args[0])
        batch.accounts.update(self.load_accounts(sorted(account_ids - batch.accounts.keys())))
        batch.remembered.update(self.load_remembered(sorted(ids - batch.remembered.keys())))
        opened: list[Account] = []
        for job in jobs:
            if job.kind == "post":
                transfers, linked = job.args
                job.value = batch.post(transfers, linked=linked)
            else:
                transfers, _, opening = job.args
                before, wanted = before_and_missing(batch.accounts, transfers, opening)
                if wanted:  # those that exist, for open_missing to see
                    unseen = [a.id for a in wanted if a.id not in batch.accounts]
                    batch.accounts.update(self.load_accounts(unseen))
                    opened += open_missing(batch.accounts, wanted)
                job.value = (batch.post(transfers, linked=False), before)
        return opened

    def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        existing = self.load_accounts(sorted({a.id for a in accounts}))
        results, created = [], []
        for account in accounts:
            result = check_open(account, existing.get(account.id))
            if result is AccountResult.CREATED:
                existing[account.id] = AccountState.opened(account)
                created.append(_account_row(account))
            results.append(result)
        self.conn.executemany(_INSERT_ACCOUNT, created)
        return results

    def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        results = []
        for account in ids:
            row = self.conn.execute(
                "SELECT closed FROM accounts WHERE id = ?", (account,)
            ).fetchone()
            if row is None:
                results.append(CloseResult.NOT_FOUND)
            elif row[0]:
                results.append(CloseResult.ALREADY_CLOSED)
            else:
                self.conn.execute("UPDATE accounts SET closed = 1 WHERE id = ?", (account,))
                results.append(CloseResult.CLOSED)
        return results

    def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        sql = f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts WHERE id IN ({{marks}})"
        return {row[0]: rows.balance(row) for row in self._select_in(sql, list(ids))}

    def all_balances(self) -> list[Balance]:
        found = self.conn.execute(f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts ORDER BY id")
        return [rows.balance(row) for row in found]

    def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        sql = f"SELECT {rows.TRANSFER_COLUMNS}, seq FROM transfers WHERE id IN ({{marks}})"
        return {row[0]: rows.posted(row) for row in self._select_in(sql, list(ids))}

    def history(self, account: str, limit: int) -> list[PostedTransfer]:
        sql = (
            f"SELECT {rows.TRANSFER_COLUMNS}, seq, posted_at_us FROM ("
            f" SELECT * FROM (SELECT {rows.TRANSFER_COLUMNS}, seq, posted_at_us FROM transfers"
            f"  WHERE debit_account_id = ? AND result = 0 ORDER BY seq DESC LIMIT ?) AS d"
            " UNION ALL"
            f" SELECT * FROM (SELECT {rows.TRANSFER_COLUMNS}, seq, posted_at_us FROM transfers"
            f"  WHERE credit_account_id = ? AND result = 0 ORDER BY seq DESC LIMIT ?) AS c"
            f") AS both_sides ORDER BY seq DESC LIMIT ?"
        )
        limit = rows.clamp_limit(limit)
        found = self.conn.execute(sql, (account, limit, account, limit, limit)).fetchall()
        return [rows.posted_timed(row) for row in reversed(found)]

    def add_review(self, item: ReviewItem) -> bool:
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO review_items (key, reason, reference, amount_fen, detail,"
            " created_at_us) VALUES (?, ?, ?, ?, ?, ?)",
            (item.key, item.reason, item.reference, item.amount_fen, item.detail, rows.now_us()),
        )
        return cursor.rowcount == 1

    def reviews(self) -> list[ReviewItem]:
        sql = f"SELECT {rows.REVIEW_COLUMNS} FROM review_items ORDER BY seq"
        return [rows.review_item(row) for row in self.conn.execute(sql)]

    def queue_reversal(self, item: QueuedReversal) -> bool:
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO reversal_queue (key, bank_id, reference, amount_fen,"
            " created_at_us) VALUES (?, ?, ?, ?, ?)",
            (item.key, item.bank_id, item.reference, item.amount_fen, rows.now_us()),
        )
        return cursor.rowcount == 1

    def queued_reversals(self) -> list[QueuedReversal]:
        sql = f"SELECT {rows.REVERSAL_COLUMNS} FROM reversal_queue ORDER BY seq"
        return [rows.queued_reversal(row) for row in self.conn.execute(sql)]


class SqliteLedger(Ledger):
    """:class:`Ledger` on SQLite. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, store: SqliteStore, writer: Writer | ProcessWriter) -> None:
        self.store, self.writer = store, writer  # store: the writer's, when it is a thread

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        batch_max: int = BATCH_MAX,
        window_s: float = WINDOW_S,
        migrate: bool = True,
        process: bool = False,
    ) -> SqliteLedger:
        """Migrate the database at `path` to the newest schema and start the writer: a thread,
        or with ``process`` a process of its own (`ledger.writer_process`: the daemon's, so
        that the event loop has an interpreter lock to itself)."""
        if migrate:
            upgrade_sqlite(path)
        store = SqliteStore(path)
        if process:
            child = ProcessWriter(path, batch_max=batch_max)  # it gathers without a window
            child.start()
            return cls(store, child)
        writer = store.writer(batch_max=batch_max, window_s=window_s)
        writer.start()
        return cls(store, writer)

    async def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        result: list[AccountResult] = await self.writer.submit("open_accounts", list(accounts))
        return result

    async def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        result: list[CloseResult] = await self.writer.submit("close_accounts", list(ids))
        return result

    async def post(
        self, transfers: Sequence[Transfer], *, linked: bool = False
    ) -> list[TransferResult]:
        result: list[TransferResult] = await self.writer.submit("post", list(transfers), linked)
        return result

    async def post_and_call(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord],
        opening: Opening,
        call: Callable[[sqlite3.Connection], T],
        postings: Callable[[T], tuple[Sequence[Transfer], Opening]],
    ) -> tuple[Posted, tuple[T, list[TransferResult]] | BaseException | None]:
        """:meth:`post_and_record`, then — when every transfer is in the ledger (posted now or
        before) — ``call`` (a write of another store on this file, in its savepoint) and the
        postings it names, all in one writer round and one transaction: a card debit, the bill
        it completes and the bill's pooled share. The call's outcome is None when it did not
        run, else its value with its postings' results, or the exception it raised (nothing of
        it written)."""
        found = await self.writer.submit(
            POST_CALL_POST, list(transfers), list(records), opening, call, postings
        )
        return found  # type: ignore[no-any-return]

    async def post_and_record(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord] = (),
        *,
        opening: Opening | None = None,
    ) -> tuple[list[TransferResult], dict[str, Balance]]:
        result: tuple[list[TransferResult], dict[str, Balance]] = await self.writer.submit(
            "post_and_record", list(transfers), list(records), opening
        )
        return result

    async def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        result: dict[str, Balance] = await self.writer.submit("balances", list(ids))
        return result

    async def all_balances(self) -> list[Balance]:
        result: list[Balance] = await self.writer.submit("all_balances")
        return result

    async def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        result: dict[str, PostedTransfer] = await self.writer.submit("lookup_transfers", list(ids))
        return result

    async def history(self, account: str, limit: int = 100) -> list[PostedTransfer]:
        result: list[PostedTransfer] = await self.writer.submit("history", account, limit)
        return result

    async def add_review(self, item: ReviewItem) -> bool:
        return bool(await self.writer.submit("add_review", item))

    async def reviews(self) -> list[ReviewItem]:
        result: list[ReviewItem] = await self.writer.submit("reviews")
        return result

    async def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        result: list[bool] = await self.writer.submit("record_offline", list(records))
        return result

    async def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        result: dict[tuple[str, str], list[tuple[int, str]]] = await self.writer.submit(
            "offline_counters", list(cards)
        )
        return result

    async def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        result: list[OfflineRecord] = await self.writer.submit(
            "offline_records", terminal_id, batch_no
        )
        return result

    async def queue_reversal(self, item: QueuedReversal) -> bool:
        return bool(await self.writer.submit("queue_reversal", item))

    async def queued_reversals(self) -> list[QueuedReversal]:
        result: list[QueuedReversal] = await self.writer.submit("queued_reversals")
        return result

    async def close(self) -> None:
        await self.writer.stop()

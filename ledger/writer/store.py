"""The SQLite ledger's statements, run by its writer inside each batch's transaction: WAL,
synchronous=FULL, the raw ``sqlite3`` driver (DESIGN §6).

Consecutive posts of a batch are decided together with one SELECT of the accounts and one of the
ids they touch, then written with one multi-row statement per table — few calls into the driver:
each releases the GIL, and taking it back from the event loop costs both threads. The medical
store's writes run here too (`Call` jobs, see `run_calls`): one writer per file, one commit per
group, no wait for SQLite's write lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger import sql_rows as rows
from ledger.core import (
    Account,
    AccountResult,
    Balance,
    CloseResult,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
    Transfer,
)
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
from ledger.writer import jobs as j
from ledger.writer.engine import BATCH_MAX, WINDOW_S, Deliver, Writer

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
#: Accounts the writer keeps between batches (`SqliteStore.load_accounts`); all dropped at this.
ACCOUNTS_KEPT_MAX = 100_000
_INSERT_ACCOUNT = (
    "INSERT INTO accounts (id, kind, owner, flags, debits_posted, credits_posted, closed)"
    " VALUES (?, ?, ?, ?, 0, 0, 0)"
)


class Tainted(Exception):
    """A call raised after writing, outside a savepoint: its batch cannot commit as it is."""


def run_calls(db: sqlite3.Connection, jobs: Sequence[j.Job], *, savepoints: bool = False) -> None:
    """Run `Call` (and `CallThenPost`) jobs' writes inside the open transaction on `db`: a job
    that raises gets its own exception; the other jobs of the batch commit. A write nearly
    always raises before writing (a refusal), so nothing needs undoing and no savepoint is paid
    for (two statements per call, each a GIL handoff on the writer); one that raises after
    writing (or took the transaction with it) raises `Tainted`, and the batch is run again with
    ``savepoints``: each write in a savepoint of its own, rolled back to where it started when
    it raises. A write whose failure took the whole transaction with it (the savepoint is gone)
    fails the batch, which the writer then runs again job by job."""
    for job in jobs:
        op = job.op
        assert isinstance(op, j.CALLS)
        if savepoints:
            db.execute("SAVEPOINT job")
        before = db.total_changes
        try:
            job.value = op.write(db)
        except Exception as error:
            if not savepoints:
                if db.total_changes != before or not db.in_transaction:
                    raise Tainted from error
            else:
                try:
                    db.execute("ROLLBACK TO job")
                except Exception:
                    raise error from None
            job.value, job.error = None, error
        if savepoints:
            db.execute("RELEASE job")


def _follow_ups(calls: Sequence[j.Job]) -> list[tuple[j.Job, j.Job]]:
    """Each `CallThenPost` that did not fail, with a `PostAndRecord` job of the transfers its
    value names (and the accounts they may need opened)."""
    followed = []
    for job in calls:
        op = job.op
        if isinstance(op, j.CallThenPost) and job.error is None:
            transfers, opening = op.postings(job.value)
            followed.append((job, j.Job(j.PostAndRecord(list(transfers), [], opening))))
    return followed


def _transfers(op: j.Operation) -> Sequence[Transfer]:
    assert isinstance(op, j.POSTS), "only posts are decided together"
    return op.transfers


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


def write_values(db: sqlite3.Connection, sql: str, values: Sequence[Sequence[Any]]) -> None:
    """`rows.execute_values` for a write: every row must have been written (inserted, or
    updated by its ``ON CONFLICT``), else the batch rolls back."""
    written = 0
    for chunk in rows.chunks(values, rows.VALUES_CHUNK):
        flat = [value for row in chunk for value in row]
        written += db.execute(rows.with_values(sql, len(chunk[0]), len(chunk)), flat).rowcount
    assert written == len(values), f"{written} rows written of {len(values)}"


class SqliteStore(OfflineRecords):
    """The statements, run on the writer's thread inside the batch's transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self._unsynced = False  # synchronous=NORMAL: the batch is only unsynced calls
        # The accounts' rows as the last commit left them, so that a post reads only those it
        # has not seen (the hot ones — pooled fund, payables, a busy card — are read once).
        # A batch's decisions change these very objects, so a rollback drops them all; a
        # commit by any other connection (another writer on the file: a CLI) changes
        # ``PRAGMA data_version``, read once per batch, and drops them too.
        self._accounts: dict[str, AccountState] = {}
        self._version = -1

    @property
    def conn(self) -> sqlite3.Connection:
        assert self.db is not None, "not connected"
        return self.db

    def connect(self) -> None:
        self.db = connect(self.path)
        self._unsynced = False
        self._accounts.clear()

    def disconnect(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self._accounts.clear()  # the batch may have changed them: as the file says, again
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def writer(
        self,
        *,
        batch_max: int = BATCH_MAX,
        window_s: float = WINDOW_S,
        deliver: Deliver | None = None,
    ) -> Writer:
        """The `Writer` that runs this store's batches (a thread of this process, or the one
        thread of the writer process's child, which delivers its own way)."""
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

    def execute(self, batch: Sequence[j.Job]) -> None:
        """The batch in one transaction; again with a savepoint per call when a call raised
        after writing (`Tainted`: rare), its values reset and what it wrote rolled back."""
        unsynced = all(isinstance(job.op, j.Call) and not job.op.synced for job in batch)
        if unsynced is not self._unsynced:  # WAL, NORMAL: no fsync at this batch's commit
            self.conn.execute(f"PRAGMA synchronous={'NORMAL' if unsynced else 'FULL'}")
            self._unsynced = unsynced
        self.conn.execute("BEGIN IMMEDIATE")
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:  # another connection committed: it may have posted
            self._accounts.clear()
            self._version = version
        try:
            self._execute(batch, savepoints=False)
        except Tainted:
            self.rollback()
            self.conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                job.value, job.error = None, None
            self._execute(batch, savepoints=True)

    def _execute(self, batch: Sequence[j.Job], *, savepoints: bool) -> None:
        """The medical store's writes first, then the postings they name with the posts, then
        the rest in order; consecutive posts are decided together (`post`)."""
        followed: list[tuple[j.Job, j.Job]] = []
        if any(isinstance(job.op, j.CALLS) for job in batch):
            calls = [job for job in batch if isinstance(job.op, j.CALLS)]
            run_calls(self.conn, calls, savepoints=savepoints)
            followed = _follow_ups(calls)
            rest = [job for job in batch if not isinstance(job.op, j.CALLS)]
            batch = [post for _, post in followed] + rest
        chained: list[tuple[j.Job, j.Job]] = []
        if any(isinstance(job.op, j.PostThenCall) for job in batch):  # posts with the others
            for job in batch:
                if isinstance(job.op, j.PostThenCall):
                    op = job.op
                    chained.append(
                        (job, j.Job(j.PostAndRecord(op.transfers, op.records, op.opening)))
                    )
            rest = [job for job in batch if not isinstance(job.op, j.PostThenCall)]
            batch = [post for _, post in chained] + rest
        start = 0
        while start < len(batch):
            end = start
            while end < len(batch) and isinstance(batch[end].op, j.POSTS):
                end += 1
            if end > start:  # the chained posts are the first run
                self.post(batch[start:end], chained if start == 0 else (), savepoints)
                start = end
            else:
                job = batch[start]
                job.value = self.one(job.op)
                start += 1
        for call, post in followed:
            call.value = j.CalledAndPosted(call.value, post.value.results)

    def one(self, op: j.Operation) -> Any:
        """An operation other than a post or a call, on its own."""
        match op:
            case j.OpenAccounts(accounts):
                return self.open_accounts(accounts)
            case j.CloseAccounts(ids):
                return self.close_accounts(ids)
            case j.AddReview(item):
                return self.add_review(item)
            case j.QueueReversal(item):
                return self.queue_reversal(item)
            case j.RecordOffline(records):
                return self.record_offline(records)
            case j.Balances(ids):
                return self.balances(ids)
            case j.AllBalances():
                return self.all_balances()
            case j.LookupTransfers(ids):
                return self.lookup_transfers(ids)
            case j.History(account, limit):
                return self.history(account, limit)
            case j.Reviews():
                return self.reviews()
            case j.QueuedReversals():
                return self.queued_reversals()
            case j.OfflineCounters(cards):
                return self.offline_counters(cards)
            case j.OfflineRecords(terminal_id, batch_no):
                return self.offline_records(terminal_id, batch_no)
        raise TypeError(f"not an operation the writer runs on its own: {type(op).__name__}")

    def _chained_calls(
        self, chained: Sequence[tuple[j.Job, j.Job]], savepoints: bool
    ) -> dict[int, j.Job]:
        """The calls of `PostThenCall` jobs whose posts are all in the ledger (as decided,
        not yet written: the calls write other tables), run now; by the job's index."""
        calls: dict[int, j.Job] = {}
        for n, (job, post) in enumerate(chained):
            op = job.op
            assert isinstance(op, j.PostThenCall)
            if all(result.ok for result in post.value.results):
                calls[n] = j.Job(j.CallThenPost(op.write, op.postings))
        run_calls(self.conn, list(calls.values()), savepoints=savepoints)
        return calls

    def _select_in(self, sql: str, ids: Sequence[str]) -> list[Any]:
        found: list[Any] = []
        for chunk in rows.chunks(ids):
            marks = ",".join("?" * len(chunk))
            found.extend(self.conn.execute(sql.format(marks=marks), tuple(chunk)).fetchall())
        return found

    def load_accounts(self, ids: Sequence[str]) -> dict[str, AccountState]:
        """The accounts of ``ids`` that exist: those kept since an earlier batch, the others
        read (and kept). The caller's batch may change them; a rollback forgets them all."""
        kept = self._accounts
        found = {i: kept[i] for i in ids if i in kept}
        if len(found) < len(ids):
            sql = f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts WHERE id IN ({{marks}})"
            unseen = [i for i in ids if i not in found]
            read = {row[0]: rows.account_state(row) for row in self._select_in(sql, unseen)}
            if len(kept) + len(read) > ACCOUNTS_KEPT_MAX:
                kept.clear()
            kept.update(read)
            found.update(read)
        return found

    def load_remembered(self, ids: Sequence[str]) -> dict[str, Remembered]:
        sql = f"SELECT {rows.TRANSFER_COLUMNS} FROM transfers WHERE id IN ({{marks}})"
        return {row[0]: rows.remembered(row) for row in self._select_in(sql, ids)}

    def post(
        self,
        jobs: Sequence[j.Job],
        chained: Sequence[tuple[j.Job, j.Job]] = (),
        savepoints: bool = False,
    ) -> None:
        """Consecutive `Post` and `PostAndRecord` jobs, decided together: one SELECT of the
        accounts and one of the ids, one upsert of the accounts opened or changed and one
        INSERT of the transfers; the records of every `PostAndRecord` then, behind every
        posting, in one go. With ``chained`` (`PostThenCall` jobs, their posts first among
        ``jobs``): their calls run once those posts are decided, and the postings the calls
        name are decided in the same `Batch` and written with the others."""
        batch = Batch({}, {})
        opened = self._decide(batch, jobs)
        if chained:
            calls = self._chained_calls(chained, savepoints)
            followed = _follow_ups(list(calls.values()))
            opened += self._decide(batch, [post for _, post in followed])
            for call, post in followed:
                call.value = j.CalledAndPosted(call.value, post.value.results)
            for n, (job, post) in enumerate(chained):
                ran = calls.get(n)
                outcome = None if ran is None else ran.error or ran.value
                assert isinstance(job.op, j.PostThenCall)
                job.value = j.PostedThenCalled(post.value, j.briefed(job.op.brief, outcome))
        changed = dict.fromkeys([a.id for a in opened] + list(batch.dirty))
        write_values(
            self.conn, _WRITE_ACCOUNTS, [rows.account_row(batch.accounts[a]) for a in changed]
        )
        at_us = rows.now_us()
        written = [rows.transfer_row(r, at_us) for r in batch.written]
        write_values(self.conn, _INSERT_TRANSFERS, written)
        on_file = [r for job in jobs if isinstance(job.op, j.PostAndRecord) for r in job.op.records]
        if on_file:
            self.record_offline(on_file)

    def _decide(self, batch: Batch, jobs: Sequence[j.Job]) -> list[Account]:
        """Decide ``jobs`` in ``batch``, loading first the accounts and ids it does not hold;
        the accounts opened on the way."""
        ids, account_ids = needed_ids(t for job in jobs for t in _transfers(job.op))
        batch.accounts.update(self.load_accounts(sorted(account_ids - batch.accounts.keys())))
        batch.remembered.update(self.load_remembered(sorted(ids - batch.remembered.keys())))
        opened: list[Account] = []
        for job in jobs:
            match job.op:
                case j.Post(transfers, linked):
                    job.value = batch.post(transfers, linked=linked)
                case j.PostAndRecord(transfers, _, opening):
                    before, wanted = before_and_missing(batch.accounts, transfers, opening)
                    if wanted:  # those that exist, for open_missing to see
                        unseen = [a.id for a in wanted if a.id not in batch.accounts]
                        batch.accounts.update(self.load_accounts(unseen))
                        opened += open_missing(batch.accounts, wanted)
                    job.value = j.Posted(batch.post(transfers, linked=False), before)
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
        self._accounts.clear()  # rare: the kept rows are read again rather than patched
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

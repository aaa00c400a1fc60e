"""The statements one writer connection of :class:`ledger.pg_ledger.PgLedger` runs inside a
batch's transaction: a batch's jobs in phases (accounts opened, every posting together, the
other writes in order, the reads last), each phase as few statements as it can be."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ledger import sql_rows as rows
from ledger.core import (
    Account,
    AccountResult,
    Balance,
    CloseResult,
    OfflineRecord,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
)
from ledger.pg_batch_sql import upsert_offline
from ledger.pg_connection import lost
from ledger.pg_post import POSTS, post_jobs
from ledger.pg_write import Known, decide_offline, held_of
from ledger.sqlite_offline import OFFLINE_COLUMNS
from ledger.state import AccountState, Remembered, check_open

#: Jobs that only read (run last in their batch).
READS = frozenset(
    {"balances", "all_balances", "lookup_transfers", "history", "reviews", "offline_records",
     "offline_counters", "queued_reversals"}
)  # fmt: skip
_NOT_ONE_BY_ONE = READS | POSTS | {"open_accounts", "call"}  # what `execute` runs in phases
_FREE = READS | POSTS | {"call"}  # what may run with no transaction open (``ledger.pg_write``)

_UPSERT_OFFLINE = upsert_offline(1)
_HELD_OFFLINE = (
    "SELECT o.psam_terminal_no, o.psam_serial, o.transfer_id IS NOT NULL, o.terminal_id,"
    " o.batch_no FROM offline_records AS o"
    " JOIN unnest($1::text[], $2::bigint[]) AS k(p, s)"
    " ON o.psam_terminal_no = k.p AND o.psam_serial = k.s"
    " ORDER BY o.psam_terminal_no, o.psam_serial FOR UPDATE OF o"
)


class Job:
    __slots__ = ("args", "future", "kind", "value")

    def __init__(self, kind: str, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.kind, self.args, self.future = kind, args, future
        self.value: Any = None


class PgStore:
    """The statements, run by the writer inside the batch's transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.conn = connection
        self.known = Known()  # what this writer's batches left (``ledger.pg_write.Known``)

    @staticmethod
    def may_run_free(batch: Sequence[Job]) -> bool:
        """The batch holds only postings, calls and reads: it may run with no transaction
        open (``ledger.pg_write``)."""
        return all(job.kind in _FREE for job in batch)

    async def execute(
        self, batch: Sequence[Job], *, guarded: bool = False, free: bool = False
    ) -> None:
        """The batch in phases, each as few statements as it can be: accounts opened, then
        every posting together (one lock, one lookup, one INSERT, one UPDATE), then the other
        writes in order, then the reads (balances merged into one query) — which see all of
        it. ``free`` (a batch that :meth:`may_run_free`): no transaction is open, the postings'
        write is a transaction of its own (it raises ``NeedsTransaction`` when it needs one,
        having written nothing; a read failing after that write fails alone, the postings
        committed are not run again — they would answer "exists"). Jobs in one batch are
        concurrent (their callers had not heard back), so any order is one they could have
        had; a caller's own jobs keep theirs (a record behind its posting, a read behind
        both)."""
        posts = [job for job in batch if job.kind in POSTS]
        calls = [job for job in batch if job.kind == "call"]
        opening = [job for job in batch if job.kind == "open_accounts"]
        reads = [job for job in batch if job.kind in READS]
        writes = [job for job in batch if job.kind not in _NOT_ONE_BY_ONE]
        for job in opening:
            job.value = await self.open_accounts(*job.args)
        if posts or calls:
            await post_jobs(
                self.conn, posts, calls=calls, guarded=guarded, free=free, known=self.known
            )
        for job in writes:
            job.value = await getattr(self, job.kind)(*job.args)
        if not free:
            await self._read(reads)
            return
        try:
            await self._read(reads)
        except Exception as error:  # the postings' write has committed: not run again
            if lost(error, self.conn):
                raise
            for job in reads:  # each alone, a failing one failing alone
                try:
                    await self._read([job])
                except Exception as alone:
                    if lost(alone, self.conn):
                        raise
                    job.future.set_exception(alone)

    async def _read(self, reads: Sequence[Job]) -> None:
        """The reads' values (the balances merged into one query)."""
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

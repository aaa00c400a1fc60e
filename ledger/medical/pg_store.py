"""The medical store's writes on PostgreSQL, natively over asyncpg: `PgWrites`, used by
`ledger.medical.sql_store.SqlMedicalStore` on a `PgEngine` (its reads stay on the bridge).

Each write is at most two round trips and holds no lock across the network: a read of what it
decides on (the bill, or the person's view: committed + reserved accumulators, in one
snapshot), a decision in Python (the service's check, the split), then one call of a function of
migration 0008, which is its own transaction (durable before it answers: synchronous_commit
stays on) and applies the decision only if what it was made on still holds:

- a transition moves the bill from the state it was decided on (its row lock orders concurrent
  ones; false when another moved it first: read again, decide again), with its accumulator
  effect (commit, void, release: check_transition) in the same transaction;
- a submission (and an offline purchase) stores its split, computed from the view it read,
  only if that is still the person's view under the person's lock — a transaction-scoped
  advisory lock per (person, year) that every write changing a view takes — else it splits
  again from the view returned. Two bills of one person in flight never both see the same
  deductible free; writes of different people never wait for each other.

A transition decided on a record this process saw last (its approval, its submission) skips the
read: the conditional move checks it is still the bill's state. Refusals and repeats are always
decided on a fresh read. Retries end: a bill's states only move forward.

The synchronous methods run on the bridge's loop (threads); `transition_async` runs on the
caller's loop with the pool given to the store (the daemon's), else through a thread.

The daemon's approvals and card-debit completions run on the ledger's writer instead, inside
its group commits (`ledger.pg_ledger.PgLedger.call`, `post_and_call`): a `LedgerTransition`
each, all of one batch read by the batch's one read and moved by its one write
(`ledger.medical.pg_batch.BillFold`), so an advice costs no commit and no round trip of its
own; a batch run again job by job after a failure moves them with :meth:`PgWrites.transitions`.
Given the daemon's ledger, the HIS API's submissions run in its batches too
(`LedgerSubmission`, :meth:`PgWrites.submissions`): one commit per batch, not per bill. Those
writes take the person's lock after the batch's account locks (and the shared accounts' in the
write) and hold it to the batch's commit; nothing that holds a person's lock waits for an
account, so the order has no cycle.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from ledger.medical.accumulators import Totals
from ledger.medical.bills import BillRecord, BillState, DuplicateBillError, check_transition
from ledger.medical.card_copies import (
    HEALTH_WRITTEN_PG,
    UPSERT_CONSENT_PG,
    UPSERT_HEALTH_PG,
    UPSERT_PG,
    Consent,
    HealthCopy,
    VisitCopy,
)
from ledger.medical.codec import bill_to_dict, split_to_dict
from ledger.medical.pg_batch import BillFold, Check, Decoder, LedgerSubmission, LedgerTransition
from ledger.medical.split import Split
from ledger.pg_bridge import PgBridge

T = TypeVar("T")

_SUBMIT = (
    "SELECT outcome, current_view FROM medical_submit("
    + ", ".join(f"${n}" for n in range(1, 17))
    + ")"
)
_TRANSITION = "SELECT medical_transition($1, $2, $3, $4, $5, $6, $7)"
#: Several transitions in one statement, in the order given (`PgWrites.transitions`).
_TRANSITIONS = (
    "SELECT medical_transition(u.b, u.f, u.t, u.n, u.e, u.p, u.y) FROM unnest($1::varchar[],"
    " $2::varchar[], $3::varchar[], $4::bigint[], $5::text[], $6::varchar[], $7::int[])"
    " WITH ORDINALITY AS u(b, f, t, n, e, p, y, o) ORDER BY u.o"
)
#: What a transition's SQL may fail with: the transaction's failure, never the bill's refusal.
_SQL_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_OFFLINE_READ = (
    "SELECT EXISTS (SELECT 1 FROM medical_offline_counts WHERE key = $1), medical_view($2, $3)"
)
_POST_OFFLINE = "SELECT outcome, current_view FROM medical_post_offline($1, $2, $3, $4, $5)"
_ACCUMULATORS = (  # one statement: one snapshot for the committed figures and the view
    "SELECT ARRAY[coalesce(c.eligible_fen, 0), coalesce(c.deductible_fen, 0),"
    " coalesce(c.pooled_fen, 0), coalesce(c.personal_account_fen, 0),"
    " coalesce(c.self_pay_fen, 0)], medical_view($1, $2) FROM (SELECT 1) AS one"
    " LEFT JOIN medical_accumulators AS c ON c.person_id = $1 AND c.year = $2"
)


class Recent:
    """The last record of each bill this process read or wrote, bounded (oldest out first)."""

    def __init__(self, size_max: int = 8192) -> None:
        self._records: dict[str, BillRecord] = {}
        self._size_max = size_max
        self._lock = threading.Lock()

    def get(self, bill_id: str) -> BillRecord | None:
        return self._records.get(bill_id)

    def put(self, record: BillRecord) -> None:
        with self._lock:
            self._records.pop(record.bill_id, None)
            if len(self._records) >= self._size_max:
                del self._records[next(iter(self._records))]
            self._records[record.bill_id] = record


class PgWrites:
    """`bill_columns`: the bill's columns in the order `decoder.record` reads them."""

    def __init__(
        self,
        bridge: PgBridge,
        decoder: Decoder,
        bill_columns: str,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self._bridge = bridge
        self._decoder = decoder
        self._pool = pool
        self._recent = Recent()
        self._select_bill = f"SELECT {bill_columns} FROM medical_bills WHERE bill_id = $1"
        self._select_bills = (
            f"SELECT {bill_columns} FROM medical_bills WHERE bill_id = ANY($1::varchar[])"
        )
        self._bill_row = ", ".join("b." + c.strip() for c in bill_columns.split(","))
        # its transitions in the ledger's batches, recalled from what it last read or moved
        self.fold = BillFold(decoder, self._bill_row, self._recent)
        self._submit_read = (
            f"SELECT {self._bill_row},"
            " medical_view($2, $3) FROM (SELECT 1) AS one"
            " LEFT JOIN medical_bills AS b ON b.bill_id = $1"
        )

    def _run(self, write: Callable[[asyncpg.Pool], Coroutine[Any, Any, T]]) -> T:
        return self._bridge.run(write(self._bridge.pool))

    # -- submissions ----------------------------------------------------------------------------
    def submit(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        return self._run(lambda db: self._submit(db, record, compute))

    async def _submit(
        self, db: asyncpg.Pool, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        found = await db.fetchrow(self._submit_read, record.bill_id, record.person_id, record.year)
        known, view = (found if found[0] is not None else None), found[-1]
        fixed = (
            record.bill_id,
            record.institution_id,
            record.his_bill_no,
            record.card_no,
            record.person_id,
            record.year,
            record.service_date,
            record.request_digest,
        )
        while known is None:
            split = compute(Totals(*view))
            outcome, view = await db.fetchrow(
                _SUBMIT,
                *fixed,
                _json(bill_to_dict(record.bill)),
                _json(split_to_dict(split)),
                record.state.value,
                record.created_at_us,
                record.expires_at_us,
                record.updated_at_us,
                list(split.delta.as_tuple()),
                view,
            )
            if outcome == "created":
                stored = replace(record, split=split)
                self._recent.put(stored)
                return stored, True
            if outcome == "known":  # stored meanwhile under this id
                known = await db.fetchrow(self._select_bill, record.bill_id)
        if known[7] != record.request_digest:
            raise DuplicateBillError(f"bill number {record.his_bill_no} already used")
        return self._decoder.record(known), False

    def ledger_submission(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> LedgerSubmission:
        return LedgerSubmission(record, compute, self.submissions)

    async def submissions(
        self, db: asyncpg.Connection, calls: Sequence[LedgerSubmission]
    ) -> list[Any]:
        """Each submission's outcome in order — (record, created), or the exception that
        refused it (DuplicateBillError) — run on ``db`` inside the ledger's batch, after its
        write, in person order: the person's lock each takes is held to the batch's commit. A
        failure of SQL is raised."""
        outcomes: list[Any] = [None] * len(calls)
        ordered = sorted(range(len(calls)), key=lambda n: _person_of(calls[n].record))
        for n in ordered:  # the people's locks in one order
            call = calls[n]
            try:
                outcomes[n] = await self._submit(db, call.record, call.compute)
            except _SQL_FAILURES:
                raise
            except Exception as error:
                outcomes[n] = error
        return outcomes

    # -- transitions ----------------------------------------------------------------------------
    def transition(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None
    ) -> tuple[BillRecord, bool]:
        return self._run(lambda db: self._transition(db, bill_id, target, now_us, check))

    async def transition_async(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None
    ) -> tuple[BillRecord, bool]:
        if self._pool is None:
            return await asyncio.to_thread(self.transition, bill_id, target, now_us, check)
        return await self._transition(self._pool, bill_id, target, now_us, check)

    async def _transition(
        self, db: asyncpg.Pool, bill_id: str, target: BillState, now_us: int, check: Check | None
    ) -> tuple[BillRecord, bool]:
        record = self._recent.get(bill_id)
        fresh = record is None
        while True:
            if record is None:
                row = await db.fetchrow(self._select_bill, bill_id)
                if row is None:
                    raise KeyError(bill_id)
                record, fresh = self._decoder.record(row), True
            try:
                to = target if check is None else check(record)
                effect = check_transition(record, to)
            except Exception:
                if fresh:
                    raise
                record = None  # decided on a remembered record: refuse only on a fresh one
                continue
            if effect is None:
                if fresh:
                    self._recent.put(record)
                    return record, False
                record = None
                continue
            moved = await db.fetchval(
                _TRANSITION,
                bill_id,
                record.state.value,
                to.value,
                now_us,
                effect,
                record.person_id,
                record.year,
            )
            if moved:
                record = replace(record, state=to, updated_at_us=now_us)
                self._recent.put(record)
                return record, True
            record = None  # it moved meanwhile: read it again

    def ledger_transition(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None
    ) -> LedgerTransition:
        return LedgerTransition(bill_id, target, now_us, check, self.transitions, self.fold)

    async def transitions(
        self, db: asyncpg.Connection, writes: Sequence[LedgerTransition]
    ) -> list[Any]:
        """Each write's outcome, in order — (record, changed), or the exception that refused
        it (KeyError for an unknown bill, the check's, BillStateError) with nothing written —
        run on ``db`` inside its transaction: the bills not remembered read in one statement,
        every decision made in Python, every move in one statement (in person order); a bill
        that moved meanwhile, or was decided on a remembered record that no longer fits, is
        done again alone as :meth:`transition` does. A failure of SQL is raised: it failed the
        transaction."""
        outcomes: list[Any] = [None] * len(writes)
        known = [self._recent.get(w.bill_id) for w in writes]
        missing = [w.bill_id for w, record in zip(writes, known, strict=True) if record is None]
        read: dict[str, BillRecord] = {}
        if missing:
            for row in await db.fetch(self._select_bills, missing):
                record = self._decoder.record(row)
                read[record.bill_id] = record
        moves: list[tuple[int, BillRecord, BillState, str]] = []
        again: list[int] = []
        for n, (write, remembered) in enumerate(zip(writes, known, strict=True)):
            found = remembered or read.get(write.bill_id)
            fresh = remembered is None
            if found is None:
                outcomes[n] = KeyError(write.bill_id)
                continue
            record = found
            try:
                to = write.target if write.check is None else write.check(record)
                effect = check_transition(record, to)
            except Exception as error:  # a refusal, decided in Python: nothing written
                if fresh:
                    outcomes[n] = error
                else:
                    again.append(n)
                continue
            if effect is None and fresh:
                self._recent.put(record)
                outcomes[n] = (record, False)
            elif effect is None:
                again.append(n)
            else:
                moves.append((n, record, to, effect))
        moves.sort(key=lambda m: (m[1].person_id, m[1].year, m[1].bill_id))
        if moves:
            moved = await db.fetch(
                _TRANSITIONS,
                [r.bill_id for _, r, _, _ in moves],
                [r.state.value for _, r, _, _ in moves],
                [to.value for _, _, to, _ in moves],
                [writes[n].now_us for n, _, _, _ in moves],
                [effect for _, _, _, effect in moves],
                [r.person_id for _, r, _, _ in moves],
                [r.year for _, r, _, _ in moves],
            )
            for (n, record, to, _), row in zip(moves, moved, strict=True):
                if row[0]:
                    record = replace(record, state=to, updated_at_us=writes[n].now_us)
                    self._recent.put(record)
                    outcomes[n] = (record, True)
                else:
                    again.append(n)
        for n in sorted(again):
            write = writes[n]
            try:
                outcomes[n] = await self._transition(
                    db, write.bill_id, write.target, write.now_us, write.check
                )
            except _SQL_FAILURES:
                raise
            except Exception as error:
                outcomes[n] = error
        return outcomes

    async def keep_visit(self, copy: VisitCopy) -> None:
        """The centre's copy of a visit (ledger.medical.card_copies), one statement."""
        if self._pool is None:
            await asyncio.to_thread(self._run, lambda db: db.execute(UPSERT_PG, *copy))
            return
        await self._pool.execute(UPSERT_PG, *copy)

    async def keep_health(self, copy: HealthCopy) -> None:
        """A person's health data (ledger.medical.card_copies), one statement."""
        if self._pool is None:
            await asyncio.to_thread(self._run, lambda db: db.execute(UPSERT_HEALTH_PG, *copy))
            return
        await self._pool.execute(UPSERT_HEALTH_PG, *copy)

    async def health_written(self, person_id: str, updated_at_us: int) -> None:
        await self._statement(HEALTH_WRITTEN_PG, person_id, updated_at_us)

    async def open_consent(self, consent: Consent) -> None:
        await self._statement(UPSERT_CONSENT_PG, *consent)

    async def _statement(self, sql: str, *args: Any) -> None:
        """One statement on the pool (through a thread without one)."""
        if self._pool is None:
            await asyncio.to_thread(self._run, lambda db: db.execute(sql, *args))
            return
        await self._pool.execute(sql, *args)

    # -- reads --------------------------------------------------------------------------------
    def accumulators(self, person_id: str, year: int) -> tuple[Totals, Totals]:
        """(committed, view) in one snapshot (two statements in a READ COMMITTED transaction
        would each take their own, and a completion between them would drop its delta from
        the view)."""
        committed, view = self._bridge.run(
            self._bridge.pool.fetchrow(_ACCUMULATORS, person_id, year)
        )
        return Totals(*committed), Totals(*view)

    # -- offline purchases ----------------------------------------------------------------------
    def post_offline(
        self, key: str, person_id: str, year: int, compute: Callable[[Totals], Totals]
    ) -> bool:
        return self._run(lambda db: self._post_offline(db, key, person_id, year, compute))

    async def _post_offline(
        self,
        db: asyncpg.Pool,
        key: str,
        person_id: str,
        year: int,
        compute: Callable[[Totals], Totals],
    ) -> bool:
        known, view = await db.fetchrow(_OFFLINE_READ, key, person_id, year)
        outcome = "known" if known else "stale"
        while outcome == "stale":
            delta = compute(Totals(*view))
            outcome, view = await db.fetchrow(
                _POST_OFFLINE, key, person_id, year, list(delta.as_tuple()), view
            )
        return bool(outcome == "created")


def _person_of(record: BillRecord) -> tuple[str, int]:
    return record.person_id, record.year


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)

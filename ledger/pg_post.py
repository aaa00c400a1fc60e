"""A group commit's postings on PostgreSQL in two statements, however many jobs it holds.

Every ``post``, ``post_and_record``, ``post_and_call`` and ``call`` of the writer's batch is
decided together:

1. one read — the touched accounts of one card or cardholder locked in id order (``FOR
   UPDATE``), the shared ones (``ledger.kinds.SHARED_KINDS``: the pooled fund, the payables —
   the hot rows) read without a lock, the transfer ids already remembered, the offline records
   the batch's jobs carry that are on file (locked), and the rows its folded calls decide on
   (``ledger.pg_fold``: the bills to approve or complete), as arrays of one row;
2. the decision in Python, by the same pure state machine as every ledger (``ledger.state``),
   of the offline records by ``offline_decision``, in job order, and of the calls by their
   fold (the bill's checks and transition);
3. one write — the new transfers (``unnest``), each touched account's totals moved once by the
   batch's net delta (``x = x + delta``, however many transfers hit it; a shared account is
   locked here, to the commit, never across the read and the decision), the offline records
   (an upsert) and the calls' moves, as CTEs of one statement (``ledger.pg_batch_sql``).

No decision depends on a shared account's totals (none is never-negative: one that is is
locked with the others). What the batch read unlocked and decided on is checked by the write:
a shared account closed meanwhile is not updated, a bill moved meanwhile does not move, and
the write then fails with ``BatchConflict`` — nothing of the batch written — and the batch runs
again from a fresh read.

An account opened by a ``post_and_record`` (the first time a card is seen) is inserted by a
statement of its own before the write (rare; the write's UPDATE must see it).

A ``post_and_call`` is a ``post_and_record`` whose call (a write of another store: the bill a
card debit completes) is decided, when its transfers are in the ledger, between the decision
and the write; the postings the call's value names (the bill's pooled share) are decided in the
same batch and written by the same write. Their likely accounts and ids come with the job, read
by the one read, so they cost no read of their own and take no lock out of order. A call
refusing (a bill unknown, not this debit's share, reversed) fails alone, having written
nothing. A call that does not fold runs its ``runner`` between the decision and the write. A
batch run alone again after a failure (``guarded``) runs each call through its runner in a
savepoint of its own, so that one failing in SQL leaves its debit posted. A ``call`` job is a
call with no posting (a bill's approval): it runs with the others, so that it too shares the
batch's commit.

The accounts' reads and the jobs' decisions are ``ledger.pg_accounts``; the calls are
``ledger.pg_calls``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ledger import sql_rows as rows
from ledger.pg_accounts import Asked, Job, decide, split_shared
from ledger.pg_batch_sql import (
    INSERT_ACCOUNTS,
    READ,
    WRITE,
    WRITE_FREE,
    WRITE_FREE_ANSWER,
    WRITE_FREE_PARAMETERS,
    read_sql,
)
from ledger.pg_calls import Folded, Unread, call_jobs, fold_of, folds_of, run_calls
from ledger.pg_fold import BatchConflict, Fold, FoldedCall, NeedsTransaction, statements
from ledger.pg_write import (
    Known,
    decide_offline,
    deltas,
    free_arguments,
    held_of,
    write_arguments,
)
from ledger.state import AccountState, Batch, needed_ids

POSTS = frozenset({"post", "post_and_record", "post_and_call"})  # the job kinds decided here
_RECORDING = frozenset({"post_and_record", "post_and_call"})  # with records, and an opening

_READ_FREE = read_sql(lock=False)


async def post_jobs(
    connection: asyncpg.Connection,
    jobs: Sequence[Job],
    *,
    calls: Sequence[Job] = (),
    guarded: bool = False,
    free: bool = False,
    known: Known | None = None,
) -> None:
    """Decide and write every posting job of a batch (see the module); each job's ``value``
    set to what its caller gets. The records of each ``post_and_record`` are decided behind
    all the postings, in job order. ``calls`` (``call`` jobs) run with the ``post_and_call``
    jobs' calls, after the accounts are locked (the order every batch takes its locks in).
    Unless ``guarded``, the folded calls' reads and writes are parts of the batch's read and
    write (``ledger.pg_fold``): a batch of postings and bill transitions is two statements.
    ``free``: run with no transaction open (``ledger.pg_write``), the write its own; raises
    ``NeedsTransaction``, having written nothing, when the batch needs one. ``known``: what the
    writer knows (``ledger.pg_write.Known``), which learns the accounts the batch decided on
    (staged in a transaction); with ``free`` the accounts it knows are not read, and a batch it
    knows all of is decided with no read, one statement."""
    chained = [job for job in jobs if job.kind == "post_and_call"]
    wanted = [(job, job.args[3]) for job in chained] + [(job, job.args[0]) for job in calls]
    folds = {} if guarded else folds_of(wanted)
    if free and (guarded or any(not isinstance(call, FoldedCall) for _, call in wanted)):
        raise NeedsTransaction("a call that does not fold")
    if not jobs and not folds:
        outcomes = await run_calls(connection, wanted, guarded=guarded)
        for job in calls:
            job.value = outcomes[id(job)]
        return
    likely = [t for job in chained for t in job.args[5]]
    ids, account_ids = needed_ids([t for job in jobs for t in job.args[0]] + likely)
    records = [r for job in jobs if job.kind in _RECORDING for r in job.args[1]]
    plan = _Plan(jobs, calls, chained, folds, records, guarded, free)
    if free and known is not None:
        try:
            await _read_decide_write(connection, plan, ids, account_ids, known, remembered=True)
            return
        except Unread:  # a decision the write would not check, on a remembered row
            pass
    await _read_decide_write(connection, plan, ids, account_ids, known, remembered=False)


async def _read_decide_write(
    connection: asyncpg.Connection,
    plan: _Plan,
    ids: set[str],
    account_ids: set[str],
    known: Known | None,
    *,
    remembered: bool,
) -> None:
    """The batch read, decided and written. With no transaction open (``plan.free``), the
    accounts the writer knows are not read; ``remembered``: nor the folds' rows this process
    remembers — and with nothing else to read, nothing is: the transfer ids are taken as new,
    the offline records as not on file (``ledger.pg_write``)."""
    free, folds = plan.free, plan.folds
    recalled: dict[str, AccountState] = {}
    unknown: Iterable[str] = account_ids
    if free and known is not None:
        recalled, unknown = known.recall(account_ids)
    unread = [
        fold.keys([call for _, call in group], remembered=remembered)
        for fold, group in folds.items()
    ]
    if remembered and not unknown and not any(unread):
        asked = Asked(set(account_ids), set(ids), lock=False, unread=set(ids))
        asked.recalled(recalled)
        batch = Batch(recalled, {})
        await _decide_and_write(connection, plan, batch, asked, [], dict.fromkeys(folds), True)
    else:
        got = await _read(connection, plan, ids, account_ids, unknown, recalled, unread)
        batch = got.batch
        await _decide_and_write(
            connection, plan, batch, got.asked, got.on_file, got.read_by_fold, remembered
        )
    if known is not None:  # in a transaction: once it commits
        known.learn(batch.accounts.values(), staged=not free)


@dataclass(slots=True)
class _Read:
    """A batch's read: what it decides in, what it asked for, the offline records on file, the
    folds' rows."""

    batch: Batch
    asked: Asked
    on_file: Sequence[Any] | None
    read_by_fold: dict[Fold, Any]


async def _read(
    connection: asyncpg.Connection,
    plan: _Plan,
    ids: set[str],
    account_ids: set[str],
    unknown: Iterable[str],
    recalled: dict[str, AccountState],
    unread: list[list[Any]],
) -> _Read:
    """The batch's read (locking what it decides on in a transaction): the accounts of
    ``unknown`` (the others ``recalled``), the transfer ids, the offline records, and each
    fold's ``unread`` rows."""
    free, folds = plan.free, plan.folds
    locking, shared = split_shared(unknown)
    keys = list(dict.fromkeys((r.psam_terminal_no, r.psam_serial) for r in plan.records))
    read, _ = plan.statements()
    found = await connection.fetchrow(
        read, locking, sorted(ids), [k[0] for k in keys], [k[1] for k in keys], shared, *unread
    )
    locked, remembered, on_file, unlocked = found[:4]
    if free and on_file:
        raise NeedsTransaction("offline records on file")
    asked = Asked(account_ids, ids, lock=not free)
    asked.decided_on(locked)
    asked.recalled(recalled)
    for row in (*(locked or ()), *(unlocked or ())):
        recalled[row[0]] = rows.account_state(row)
    batch = Batch(recalled, {row[0]: rows.remembered(row) for row in remembered or ()})
    return _Read(batch, asked, on_file, dict(zip(folds, found[4:], strict=True)))


@dataclass(slots=True)
class _Plan:
    """A batch's jobs as :func:`post_jobs` sorted them."""

    jobs: Sequence[Job]
    calls: Sequence[Job]
    chained: list[Job]
    folds: dict[Fold, list[tuple[Job, Any]]]
    records: list[Any]
    guarded: bool
    free: bool

    def statements(self) -> tuple[str, str]:
        """The batch's read and write: with no transaction open (``free``) or in one, with its
        folds' parts (``ledger.pg_fold.statements``, kept)."""
        folds = tuple(self.folds)
        if self.free:
            return statements(
                _READ_FREE, WRITE_FREE, folds, WRITE_FREE_PARAMETERS, WRITE_FREE_ANSWER
            )
        return statements(READ, WRITE, folds)


async def _decide_and_write(
    connection: asyncpg.Connection,
    plan: _Plan,
    batch: Batch,
    asked: Asked,
    on_file: Sequence[Any] | None,
    read_by_fold: dict[Fold, Any],
    remembered: bool,
) -> None:
    """The batch decided in ``batch`` (what it read, and what its writer knew) and written;
    ``remembered``: the folds decide on the rows not read as they remember them."""
    jobs, calls, chained, folds, free = plan.jobs, plan.calls, plan.chained, plan.folds, plan.free
    opened = await decide(connection, batch, jobs, asked)
    moves: list[list[Any]] = []
    # ``call`` jobs that do not fold (a bill's submission: it takes the person's lock) run after
    # the write, so that every batch takes its locks in one order: the cards' accounts, the
    # shared accounts, then the people's.
    early = [job for job in calls if fold_of(job.args[0]) in folds]
    late = [job for job in calls if fold_of(job.args[0]) not in folds]
    if chained or early:
        folded = Folded(read_by_fold, moves, remembered)
        opened += await call_jobs(
            connection, batch, chained, early, asked, folded, guarded=plan.guarded
        )
    if opened and free:
        raise NeedsTransaction("accounts to open")
    if opened:  # a concurrent process opening one too: a unique violation, retried
        await connection.execute(
            INSERT_ACCOUNTS,
            [a.id for a in opened],
            [a.kind.value for a in opened],
            [a.owner for a in opened],
            [int(a.flags) for a in opened],
        )
    _, offline = decide_offline(held_of(on_file), plan.records)
    written = {row.transfer.id for row in batch.written}
    if any(t.id in asked.unread and t.id not in written for job in jobs for t in job.args[0]):
        # a job's id taken as new that the write does not insert (a linked refusal): nothing
        # would find it taken — a retransmission refused instead of found — so it is read
        raise Unread("a transfer id taken as new, not written")
    # a decision on a recalled account is checked by the write alone, even one writing nothing
    # (a linked refusal): the write then runs to check it
    if batch.written or offline or any(column for column in moves) or (free and asked.hinted):
        changed = deltas(batch)
        _, write = plan.statements()
        if free:  # its answer, or a serialization failure when anything it checks changed
            await connection.fetchval(
                write, *free_arguments(batch, changed, offline, asked.checked), *moves
            )
            return
        updated, applied = await connection.fetchrow(
            write, *write_arguments(batch, changed, offline), *moves
        )
        if updated != len(changed) or not applied:
            raise BatchConflict(f"{len(changed) - updated} accounts closed, moves {applied}")
    if late:
        guarded = plan.guarded
        outcomes = await run_calls(connection, [(j, j.args[0]) for j in late], guarded=guarded)
        for job in late:
            job.value = outcomes[id(job)]

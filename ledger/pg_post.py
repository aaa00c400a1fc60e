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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from ledger import sql_rows as rows
from ledger.core import Account, Transfer
from ledger.kinds import is_shared
from ledger.pg_batch_sql import (
    INSERT_ACCOUNTS,
    LOAD,
    READ,
    REMEMBERED,
    WRITE,
    WRITE_FREE,
    WRITE_FREE_ANSWER,
    WRITE_FREE_PARAMETERS,
    load_sql,
    read_sql,
)
from ledger.pg_connection import lost
from ledger.pg_fold import BatchConflict, Fold, FoldedCall, NeedsTransaction, statements
from ledger.pg_write import (
    Known,
    Totals,
    decide_offline,
    deltas,
    free_arguments,
    held_of,
    write_arguments,
)
from ledger.state import (
    AccountState,
    Batch,
    before_and_missing,
    needed_ids,
    open_missing,
)
from ledger.writer.jobs import CalledAndPosted, Posted, PostedThenCalled

POSTS = frozenset({"post", "post_and_record", "post_and_call"})  # the job kinds decided here
_RECORDING = frozenset({"post_and_record", "post_and_call"})  # with records, and an opening

_READ_FREE, _LOAD_FREE = read_sql(lock=False), load_sql(lock=False)


Runner = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[list[Any]]]


class Job(Protocol):
    kind: str
    args: tuple[Any, ...]
    value: Any


class LedgerCall(Protocol):
    """A ``post_and_call``'s or a ``call``'s call: ``runner`` runs the calls of its kind of a
    batch together on the batch's connection, each one's outcome in order (its value, or the
    exception that refused it with nothing written); it raises only when SQL failed (the
    transaction did)."""

    @property
    def runner(self) -> Runner: ...


class LedgerCalls(Protocol):
    """A ledger that runs calls in its batches (``PgLedger.call``, and from a thread
    ``PgLedger.call_from_thread``)."""

    async def call(self, call: LedgerCall) -> Any: ...

    def call_from_thread(self, call: LedgerCall) -> Any: ...


@dataclass(slots=True)
class _Follow:
    """The postings a call's value names, decided as a ``post_and_record`` of their own."""

    args: tuple[Any, ...]
    kind: str = "post_and_record"
    value: Any = None


@dataclass(slots=True)
class _Asked:
    """The accounts and transfer ids the batch has read (found or not); ``lock``: inside the
    batch's transaction, reads lock what the batch decides on, else (``free``) ``checked``
    keeps it as read, for the write to check."""

    accounts: set[str]
    ids: set[str]
    lock: bool = True
    checked: dict[str, Totals] = field(default_factory=dict)
    hinted: bool = False  # some of ``checked`` recalled, not read: only the write checks them

    def decided_on(self, found: Sequence[Any] | None) -> None:
        if self.lock:
            return
        if any(is_shared(row[0]) for row in found or ()):  # never negative: a hot row decided on
            raise NeedsTransaction("a shared account the batch decides on")
        self.checked.update({row[0]: (row[4], row[5], row[6]) for row in found or ()})

    def recalled(self, known: Mapping[str, AccountState]) -> None:
        """Accounts the writer knew (``ledger.pg_write.Known``), decided on as if read: checked
        by the write, the shared ones moved by delta as read ones are."""
        before = len(self.checked)
        self.checked.update(
            (a, (s.debits_posted_fen, s.credits_posted_fen, s.closed))
            for a, s in known.items()
            if not is_shared(a)
        )
        self.hinted |= len(self.checked) > before


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
    folds = {} if guarded else _folds(wanted)
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
        except _Unread:  # a decision the write would not check, on a remembered row
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
        asked = _Asked(set(account_ids), set(ids), lock=False)
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
    asked: _Asked
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
    locking, shared = _split(unknown)
    keys = list(dict.fromkeys((r.psam_terminal_no, r.psam_serial) for r in plan.records))
    if free:
        read, _ = statements(
            _READ_FREE, WRITE_FREE, tuple(folds), WRITE_FREE_PARAMETERS, WRITE_FREE_ANSWER
        )
    else:
        read, _ = statements(READ, WRITE, tuple(folds))
    found = await connection.fetchrow(
        read, locking, sorted(ids), [k[0] for k in keys], [k[1] for k in keys], shared, *unread
    )
    locked, remembered, on_file, unlocked = found[:4]
    if free and on_file:
        raise NeedsTransaction("offline records on file")
    asked = _Asked(account_ids, ids, lock=not free)
    asked.decided_on(locked)
    asked.recalled(recalled)
    for row in (*(locked or ()), *(unlocked or ())):
        recalled[row[0]] = rows.account_state(row)
    batch = Batch(recalled, {row[0]: rows.remembered(row) for row in remembered or ()})
    return _Read(batch, asked, on_file, dict(zip(folds, found[4:], strict=True)))


class _Unread(Exception):
    """A batch decided on rows its process remembers made a decision its write would not
    check: it is decided again from a read of all its rows, nothing of it written."""


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


async def _decide_and_write(
    connection: asyncpg.Connection,
    plan: _Plan,
    batch: Batch,
    asked: _Asked,
    on_file: Sequence[Any] | None,
    read_by_fold: dict[Fold, Any],
    remembered: bool,
) -> None:
    """The batch decided in ``batch`` (what it read, and what its writer knew) and written;
    ``remembered``: the folds decide on the rows not read as they remember them."""
    jobs, calls, chained, folds, free = plan.jobs, plan.calls, plan.chained, plan.folds, plan.free
    opened = await _decide(connection, batch, jobs, asked)
    moves: list[list[Any]] = []
    # ``call`` jobs that do not fold (a bill's submission: it takes the person's lock) run after
    # the write, so that every batch takes its locks in one order: the cards' accounts, the
    # shared accounts, then the people's.
    early = [job for job in calls if _fold_of(job.args[0]) in folds]
    late = [job for job in calls if _fold_of(job.args[0]) not in folds]
    if chained or early:
        folded = _Folded(read_by_fold, moves, remembered)
        opened += await _call(
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
    # a decision on a recalled account is checked by the write alone, even one writing nothing
    # (a linked refusal): the write then runs to check it
    if batch.written or offline or any(column for column in moves) or (free and asked.hinted):
        changed = deltas(batch)
        if free:  # its answer, or a serialization failure when anything it checks changed
            _, write = statements(
                _READ_FREE, WRITE_FREE, tuple(folds), WRITE_FREE_PARAMETERS, WRITE_FREE_ANSWER
            )
            await connection.fetchval(
                write, *free_arguments(batch, changed, offline, asked.checked), *moves
            )
            return
        _, write = statements(READ, WRITE, tuple(folds))
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


def _split(account_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """The accounts a batch locks as it reads them, and the shared ones it does not (both in id
    order)."""
    ordered = sorted(account_ids)
    return [a for a in ordered if not is_shared(a)], [a for a in ordered if is_shared(a)]


def _folds(wanted: Sequence[tuple[Job, LedgerCall]]) -> dict[Fold, list[tuple[Job, Any]]]:
    folds: dict[Fold, list[tuple[Job, Any]]] = {}
    for job, call in wanted:
        if isinstance(call, FoldedCall):
            folds.setdefault(call.fold, []).append((job, call))
    return folds


@dataclass(slots=True)
class _Folded:
    """The rows each fold's calls read in the batch's read (``remembered``: the others as the
    fold remembers them), and the columns of their moves (the write's parameters after its
    own), filled in as the calls are decided."""

    read: dict[Fold, Any]
    moves: list[list[Any]]
    remembered: bool


async def _load(
    connection: asyncpg.Connection, batch: Batch, account_ids: Iterable[str], asked: _Asked
) -> None:
    """Accounts read after the batch's read: locked in id order (or kept to be checked), the
    shared ones not."""
    locking, shared = _split(account_ids)
    if locking or shared:
        sql = LOAD if asked.lock else _LOAD_FREE
        locked, unlocked = await connection.fetchrow(sql, locking, shared)
        asked.decided_on(locked)
        found = (*(locked or ()), *(unlocked or ()))
        batch.accounts.update({row[0]: rows.account_state(row) for row in found})


async def _decide(
    connection: asyncpg.Connection, batch: Batch, jobs: Iterable[Job], asked: _Asked
) -> list[Account]:
    """Each job decided in ``batch`` (which holds what they name, or knows it missing); the
    accounts opened on the way (those that exist read first: locked, unless shared)."""
    opened: list[Account] = []
    for job in jobs:
        if job.kind == "post":
            transfers, linked = job.args
            job.value = batch.post(transfers, linked=linked)
            continue
        transfers, _, opening = job.args[:3]
        before, wanted = before_and_missing(batch.accounts, transfers, opening)
        if wanted:  # those that exist, for open_missing to see
            missing = [a.id for a in wanted if a.id not in batch.accounts]
            await _load(connection, batch, missing, asked)
            opened += open_missing(batch.accounts, wanted)
        job.value = (batch.post(transfers, linked=False), before)
    return opened


async def _call(
    connection: asyncpg.Connection,
    batch: Batch,
    chained: Sequence[Job],
    plain: Sequence[Job],
    asked: _Asked,
    folded: _Folded,
    *,
    guarded: bool,
) -> list[Account]:
    """The calls of the ``post_and_call`` jobs whose transfers are all in the ledger (as
    decided, not yet written: the calls write other tables) and of the ``call`` jobs — the
    folded ones decided from the batch's read, their moves left for its write; the others run
    now — then the postings their values name, decided in ``batch``; each ``post_and_call``'s
    value made a ``PostedThenCalled``, each ``call``'s its outcome."""
    ready = [job for job in chained if all(r.ok for r in job.value[0])]
    pending = [(job, job.args[3]) for job in ready] + [(job, job.args[0]) for job in plain]
    outcomes: dict[int, Any] = {}
    for fold, found in folded.read.items():
        group = [(job, call) for job, call in pending if _fold_of(call) is fold]
        calls = [call for _, call in group]
        decided = fold.decide(calls, found, remembered=folded.remembered)
        if decided is None:
            raise _Unread(f"a decision on a remembered row that {fold!r}'s write would not check")
        outcomes.update(zip((id(job) for job, _ in group), decided.outcomes, strict=True))
        folded.moves += decided.columns
    rest = [(job, call) for job, call in pending if id(job) not in outcomes]
    outcomes.update(await run_calls(connection, rest, guarded=guarded))
    for job in plain:
        job.value = outcomes[id(job)]
    follows: dict[int, _Follow] = {}
    for job in ready:
        outcome = outcomes[id(job)]
        if not isinstance(outcome, BaseException):
            transfers, opening = job.args[4](outcome)
            follows[id(job)] = _Follow((list(transfers), [], opening))
    opened: list[Account] = []
    if follows:
        await _read_more(connection, batch, [t for f in follows.values() for t in f.args[0]], asked)
        opened = await _decide(connection, batch, follows.values(), asked)
    for job in chained:
        results, before = job.value
        called: Any = None
        if id(job) in outcomes:
            called = outcomes[id(job)]
            follow = follows.get(id(job))
            if follow is not None:
                called = CalledAndPosted(called, follow.value[0])
        job.value = PostedThenCalled(Posted(results, before), called)
    return opened


def _fold_of(call: LedgerCall) -> Fold | None:
    return call.fold if isinstance(call, FoldedCall) else None


async def run_calls(
    connection: asyncpg.Connection, pending: Sequence[tuple[Job, LedgerCall]], *, guarded: bool
) -> dict[int, Any]:
    """Each job's call's outcome, by the job's ``id``: the calls of one runner together, or
    ``guarded`` each in a savepoint of its own (a call failing in SQL: its error its outcome)."""
    groups: dict[Runner, list[tuple[Job, LedgerCall]]] = {}
    for job, call in pending:
        groups.setdefault(call.runner, []).append((job, call))
    outcomes: dict[int, Any] = {}
    for runner, group in groups.items():
        if not guarded:
            found = await runner(connection, [call for _, call in group])
            outcomes.update(zip((id(job) for job, _ in group), found, strict=True))
            continue
        for job, call in group:
            try:
                async with connection.transaction():  # a savepoint
                    (outcomes[id(job)],) = await runner(connection, [call])
            except Exception as error:
                if lost(error, connection):
                    raise
                outcomes[id(job)] = error
    return outcomes


async def _read_more(
    connection: asyncpg.Connection, batch: Batch, transfers: Sequence[Transfer], asked: _Asked
) -> None:
    """What ``transfers`` name that the batch has not read yet (none when the jobs said the
    postings their calls would name): the accounts locked, the ids looked up."""
    wanted_ids, wanted_accounts = needed_ids(transfers)
    accounts, ids = sorted(wanted_accounts - asked.accounts), sorted(wanted_ids - asked.ids)
    asked.accounts.update(accounts)
    asked.ids.update(ids)
    await _load(connection, batch, accounts, asked)
    if ids:
        found = await connection.fetch(REMEMBERED, ids)
        batch.remembered.update({r[0]: rows.remembered(r) for r in found})

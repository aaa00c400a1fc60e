"""The calls a PostgreSQL group commit runs beside its postings (``ledger.pg_post``): what a
call is (``LedgerCall``: its ``runner`` runs the calls of its kind together), the folded ones
decided from the batch's read (``ledger.pg_fold``), the others run by their runners (``guarded``:
each in a savepoint of its own), and the postings their values name decided in the batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from ledger.core import Account
from ledger.pg_accounts import Asked, Job, decide, read_more
from ledger.pg_connection import lost
from ledger.pg_fold import Fold, FoldedCall
from ledger.state import Batch
from ledger.writer.jobs import CalledAndPosted, Posted, PostedThenCalled

Runner = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[list[Any]]]


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
class Follow:
    """The postings a call's value names, decided as a ``post_and_record`` of their own."""

    args: tuple[Any, ...]
    kind: str = "post_and_record"
    value: Any = None


@dataclass(slots=True)
class Folded:
    """The rows each fold's calls read in the batch's read (``remembered``: the others as the
    fold remembers them), and the columns of their moves (the write's parameters after its
    own), filled in as the calls are decided."""

    read: dict[Fold, Any]
    moves: list[list[Any]]
    remembered: bool


class Unread(Exception):
    """A batch decided on rows its process remembers made a decision its write would not
    check: it is decided again from a read of all its rows, nothing of it written."""


def folds_of(wanted: Sequence[tuple[Job, LedgerCall]]) -> dict[Fold, list[tuple[Job, Any]]]:
    folds: dict[Fold, list[tuple[Job, Any]]] = {}
    for job, call in wanted:
        if isinstance(call, FoldedCall):
            folds.setdefault(call.fold, []).append((job, call))
    return folds


async def call_jobs(
    connection: asyncpg.Connection,
    batch: Batch,
    chained: Sequence[Job],
    plain: Sequence[Job],
    asked: Asked,
    folded: Folded,
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
        group = [(job, call) for job, call in pending if fold_of(call) is fold]
        calls = [call for _, call in group]
        decided = fold.decide(calls, found, remembered=folded.remembered)
        if decided is None:
            raise Unread(f"a decision on a remembered row that {fold!r}'s write would not check")
        outcomes.update(zip((id(job) for job, _ in group), decided.outcomes, strict=True))
        folded.moves += decided.columns
    rest = [(job, call) for job, call in pending if id(job) not in outcomes]
    outcomes.update(await run_calls(connection, rest, guarded=guarded))
    for job in plain:
        job.value = outcomes[id(job)]
    follows: dict[int, Follow] = {}
    for job in ready:
        outcome = outcomes[id(job)]
        if not isinstance(outcome, BaseException):
            transfers, opening = job.args[4](outcome)
            follows[id(job)] = Follow((list(transfers), [], opening))
    opened: list[Account] = []
    if follows:
        await read_more(connection, batch, [t for f in follows.values() for t in f.args[0]], asked)
        opened = await decide(connection, batch, follows.values(), asked)
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


def fold_of(call: LedgerCall) -> Fold | None:
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

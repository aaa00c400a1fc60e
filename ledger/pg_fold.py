"""Calls folded into a PostgreSQL group commit's one read and one write (``ledger.pg_post``).

A ``call`` of the ledger's batch (a bill's approval, the completion a card debit pays) is a
write of another store on the ledger's database. Run as its own statements (a read of what it
decides on, then its write) it costs the batch two more round trips, each one a wait of the
transaction on the writer's event loop ("idle in transaction" with the batch's locks held). A
:class:`FoldedCall` avoids both: its :class:`Fold` adds a sub-select to the batch's read (the
rows its calls decide on, read with the accounts, unlocked) and a CTE to the batch's write
(the moves decided in Python, each applied only if what it was decided on still holds, one
``ok`` per move). A move that no longer applies (the row moved meanwhile) fails the whole
write with :class:`BatchConflict`, and the batch runs again from a fresh read — nothing of it
written.

A batch run again job by job after a failure (``guarded``) runs the calls through their
``runner`` instead, each in a savepoint of its own (``ledger.pg_calls.run_calls``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol


class BatchConflict(Exception):
    """What a batch decided on changed before its write (a shared account closed, a bill moved
    by another process): the write is not applied; the batch is run again (retryable)."""


class NeedsTransaction(Exception):
    """A batch read with no transaction open (``ledger.pg_write``) needs what only a transaction
    gives (an account to open, a call that does not fold, an offline record already on file):
    nothing of it is written; it runs in a transaction instead."""


class Fold(Protocol):
    """How the calls of one kind join a batch's read and write. Hashable (one per store)."""

    width: int  # the write's parameters

    def read_sql(self, keys: int) -> str:
        """A scalar sub-select: the rows the calls decide on as one array (null when none),
        their keys in parameter ``$keys``."""
        ...

    def write_ctes(self, first: int, name: str) -> str:
        """CTEs of the write: the moves, their columns in parameters ``$first`` onwards
        (``width`` of them); the last one named ``name``, with a boolean column ``ok``, false
        in some row when a move did not apply (others may be named ``name`` + a suffix)."""
        ...

    def keys(self, calls: Sequence[Any], *, remembered: bool = False) -> list[Any]:
        """The keys of the rows ``calls`` decide on (the read's parameter); ``remembered``:
        only those this process does not remember (``decide`` decides on the others as it
        remembers them)."""
        ...

    def decide(
        self, calls: Sequence[Any], found: Sequence[Any] | None, *, remembered: bool = False
    ) -> Decided | None:
        """Each call's outcome in order (its value as if its move applied, or the exception
        that refused it) and the columns of the moves to write, from the rows read and, when
        ``remembered``, the rows not read as this process last read or moved them (a batch
        with a writer that knows its accounts, ``ledger.pg_write.Known``) — then None unless
        every decision on a remembered row is a move, which the write checks (applied only
        from the state it was decided on): a refusal or a call with no effect on a remembered
        row may be stale, so the batch is then decided from a read of all its rows."""
        ...

    def remembers(self, calls: Sequence[Any]) -> bool:
        """Whether every row ``calls`` decide on is remembered (none for :meth:`keys` to
        read)."""
        ...


class Decided:
    """The outcomes of a fold's calls and the columns of their moves."""

    __slots__ = ("columns", "outcomes")

    def __init__(self, outcomes: list[Any], columns: list[list[Any]]) -> None:
        self.outcomes, self.columns = outcomes, columns


class FoldedCall:
    """A ledger call whose calls of one batch fold into its read and write (``fold``); it is
    still a ``LedgerCall`` (its ``runner`` runs it alone, in a savepoint, when guarded)."""

    __slots__ = ()
    fold: Fold


@functools.lru_cache(maxsize=32)
def statements(
    head: str,
    write_head: str,
    folds: tuple[Fold, ...],
    write_parameters: int = 23,
    answer: str = "SELECT (SELECT count(*) FROM a), {moved}",
) -> tuple[str, str]:
    """The batch's read and write with ``folds``' parts: the read's parameters after the
    head's five (``$6`` onwards, one per fold), the write's after the head's
    ``write_parameters``. The write answers ``answer`` with ``{moved}`` the condition that
    every move applied (by default: the accounts updated, and that)."""
    read = head + "".join(f", ({fold.read_sql(6 + n)})" for n, fold in enumerate(folds))
    ctes, first, moved = "", write_parameters + 1, "true"
    for n, fold in enumerate(folds):
        ctes += f", {fold.write_ctes(first, f'f{n}')}"
        moved += f" AND (SELECT coalesce(bool_and(ok), true) FROM f{n})"
        first += fold.width
    return read, f"{write_head}{ctes} {answer.format(moved=moved)}"

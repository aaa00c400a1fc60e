"""Row shapes shared by the SQL ledgers: the column lists their raw statements select, and the
conversions between rows and the core's values."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from ledger.core import (
    AccountFlags,
    Balance,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
    Transfer,
    TransferResult,
)
from ledger.kinds import AccountKind
from ledger.state import AccountState, Remembered

ACCOUNT_COLUMNS = "id, kind, owner, flags, debits_posted, credits_posted, closed"
TRANSFER_COLUMNS = "id, debit_account_id, credit_account_id, amount_fen, code, reference, result"
REVIEW_COLUMNS = "key, reason, reference, amount_fen, detail"
REVERSAL_COLUMNS = "key, bank_id, reference, amount_fen"
HISTORY_LIMIT_MAX = 10_000
IN_CHUNK = 500  # ids per "IN (...)" statement
VALUES_CHUNK = 64  # rows per multi-row statement (a prepared statement kept per row count)


class WriterConnection(sqlite3.Connection):
    """A writer's connection (``factory=`` of ``sqlite3.connect``): ``kept`` holds what its
    writes keep from one transaction to the next (the medical store's bills). Writes that are
    objects, not closures over a store, find their caches here on whichever writer runs
    them: a thread of this process or the ledger's writer process (`ledger.writer.process`)."""

    kept: Any = None


T = TypeVar("T")


def now_us() -> int:
    return time.time_ns() // 1000


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@functools.cache
def with_values(sql: str, width: int, count: int) -> str:
    """``sql`` with its ``{values}`` slot filled with ``count`` rows of ``width`` SQLite marks.

    >>> with_values("INSERT INTO t (a, b) VALUES {values}", 2, 2)
    'INSERT INTO t (a, b) VALUES (?, ?), (?, ?)'
    """
    row = "(" + ", ".join("?" * width) + ")"
    return sql.format(values=", ".join([row] * count))


def execute_values(db: sqlite3.Connection, sql: str, found: Sequence[Sequence[Any]]) -> list[Any]:
    """``sql`` (see :func:`with_values`) on SQLite for the rows ``found``, a chunk of them per
    statement: ``executemany`` steps (and hands the GIL over) once per row, this once per
    chunk. Returns the rows the statements give, if any, in order."""
    results: list[Any] = []
    for chunk in chunks(found, VALUES_CHUNK):
        values = [value for row in chunk for value in row]
        results += db.execute(with_values(sql, len(chunk[0]), len(chunk)), values).fetchall()
    return results


_KINDS = {kind.value: kind for kind in AccountKind}  # dict lookups: an enum call costs µs
_FLAGS = {int(flags): flags for flags in (AccountFlags.NONE, AccountFlags.NEVER_NEGATIVE)}


def account_state(row: Sequence[Any]) -> AccountState:
    """An account's row as loaded: its posted totals are never negative."""
    kind, flags = _KINDS.get(row[1]), _FLAGS.get(row[3])
    assert row[4] >= 0 and row[5] >= 0, f"account {row[0]} has a negative posted total"
    return AccountState(
        row[0],
        AccountKind(row[1]) if kind is None else kind,
        row[2],
        AccountFlags(row[3]) if flags is None else flags,
        int(row[4]),
        int(row[5]),
        bool(row[6]),
    )


def balance(row: Sequence[Any]) -> Balance:
    kind, flags = _KINDS.get(row[1]), _FLAGS.get(row[3])
    return Balance(
        row[0],
        AccountKind(row[1]) if kind is None else kind,
        AccountFlags(row[3]) if flags is None else flags,
        int(row[4]),
        int(row[5]),
        bool(row[6]),
    )


def remembered(row: Sequence[Any]) -> Remembered:
    transfer = Transfer(row[0], row[1], row[2], int(row[3]), int(row[4]), row[5])
    result = _RESULTS[row[6]] if 0 <= row[6] < len(_RESULTS) else TransferResult(row[6])
    return Remembered(transfer, result)


_RESULTS = tuple(TransferResult)  # by value (0, 1, …): an enum call costs µs


def posted(row: Sequence[Any]) -> PostedTransfer:
    """A row of TRANSFER_COLUMNS followed by seq."""
    first = remembered(row)
    return PostedTransfer(first.transfer, first.result, int(row[7]))


def posted_timed(row: Sequence[Any]) -> PostedTransfer:
    """A row of TRANSFER_COLUMNS followed by seq and posted_at_us (a history row)."""
    first = remembered(row)
    return PostedTransfer(first.transfer, first.result, int(row[7]), int(row[8]))


def transfer_row(row: Remembered, at_us: int) -> tuple[str, str, str, int, int, str, int, int]:
    t = row.transfer
    return (
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount_fen,
        t.code,
        t.reference,
        int(row.result),
        at_us,
    )


def account_row(state: AccountState) -> tuple[str, str, str, int, int, int, bool]:
    """An account's columns in ``accounts`` order."""
    return (
        state.id,
        state.kind.value,
        state.owner,
        int(state.flags),
        state.debits_posted_fen,
        state.credits_posted_fen,
        state.closed,
    )


def review_item(row: Sequence[Any]) -> ReviewItem:
    return ReviewItem(row[0], row[1], row[2], int(row[3]), row[4])


def queued_reversal(row: Sequence[Any]) -> QueuedReversal:
    return QueuedReversal(row[0], row[1], row[2], int(row[3]))


def clamp_limit(limit: int) -> int:
    return max(0, min(limit, HISTORY_LIMIT_MAX))

"""The medical store's writes as calls of the PostgreSQL ledger's batches
(``ledger.pg_post``), sharing their commits: a bill's transition (:class:`LedgerTransition`,
folded into the batch's one read and one write by :class:`BillFold`) and a submission
(:class:`LedgerSubmission`, run by ``PgWrites.submissions`` on the writer's connection).

The fold reads the batch's bills without a lock and decides each transition in Python as
``PgWrites.transitions`` does; the write moves each bill with ``medical_transition`` (in person
order: the person's lock, then the bill's row), which moves it only from the state it was
decided on — a bill moved meanwhile fails the batch's write (``BatchConflict``), which runs
again from a fresh read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from ledger.medical.accumulators import Totals
from ledger.medical.bills import BillRecord, BillState, check_transition
from ledger.medical.split import Split
from ledger.pg_fold import Decided, Fold, FoldedCall

Check = Callable[[BillRecord], BillState]
Runner = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[list[Any]]]


class Decoder(Protocol):
    def record(self, row: Any) -> BillRecord: ...


@dataclass(frozen=True, slots=True)
class LedgerTransition(FoldedCall):
    """A bill's transition for the PostgreSQL ledger's writer to run inside its batch's
    transaction: folded into the batch's read and write (``fold``, the store's `PgWrites`), or
    alone on the writer's connection (`PgWrites.transitions`, which ``runner`` is)."""

    bill_id: str
    target: BillState
    now_us: int
    check: Check | None
    runner: Runner
    fold: Fold


@dataclass(frozen=True, slots=True)
class LedgerSubmission:
    """A bill's submission for the PostgreSQL ledger's writer to run inside its batch's
    transaction (`PgWrites.submissions`, which ``runner`` is), sharing its commit."""

    record: BillRecord
    compute: Callable[[Totals], Split]
    runner: Runner


class BillFold:
    """The bills' transitions of a batch in its read and write (``ledger.pg_fold.Fold``)."""

    def __init__(self, decoder: Decoder, bill_row: str) -> None:
        self._decoder, self._bill_row = decoder, bill_row

    width = 7

    def read_sql(self, keys: int) -> str:
        return f"SELECT array_agg(ROW({self._bill_row})) FROM medical_bills AS b" + (
            f" WHERE b.bill_id = ANY(${keys}::varchar[])"
        )

    def write_sql(self, first: int) -> str:
        types = ("varchar", "varchar", "varchar", "bigint", "text", "varchar", "int")
        arrays = ", ".join(f"${first + n}::{kind}[]" for n, kind in enumerate(types))
        return (
            "SELECT medical_transition(u.b, u.f, u.t, u.n, u.e, u.p, u.y) AS ok"
            f" FROM unnest({arrays}) WITH ORDINALITY AS u(b, f, t, n, e, p, y, o) ORDER BY u.o"
        )

    def keys(self, calls: Sequence[Any]) -> list[Any]:
        return list(dict.fromkeys(call.bill_id for call in calls))

    def decide(self, calls: Sequence[Any], found: Sequence[Any] | None) -> Decided:
        """As ``PgWrites.transitions`` decides, from the bills as the batch read them (no lock: a
        move applies only from the state it was decided on, else the batch runs again); a bill
        moved twice in one batch is decided the second time from the first move."""
        records = {row[0]: self._decoder.record(row) for row in found or ()}
        outcomes: list[Any] = []
        moves: list[tuple[BillRecord, BillState, str, int]] = []
        for write in calls:
            record = records.get(write.bill_id)
            if record is None:
                outcomes.append(KeyError(write.bill_id))
                continue
            try:
                to = write.target if write.check is None else write.check(record)
                effect = check_transition(record, to)
            except Exception as error:  # a refusal: nothing written
                outcomes.append(error)
                continue
            if effect is None:
                outcomes.append((record, False))
                continue
            moves.append((record, to, effect, write.now_us))
            records[write.bill_id] = moved = replace(record, state=to, updated_at_us=write.now_us)
            outcomes.append((moved, True))
        moves.sort(key=lambda m: (m[0].person_id, m[0].year))  # stable: a bill's moves in order
        columns: list[list[Any]] = [
            [r.bill_id for r, _, _, _ in moves],
            [r.state.value for r, _, _, _ in moves],
            [to.value for _, to, _, _ in moves],
            [now_us for _, _, _, now_us in moves],
            [effect for _, _, effect, _ in moves],
            [r.person_id for r, _, _, _ in moves],
            [r.year for r, _, _, _ in moves],
        ]
        return Decided(outcomes, columns)

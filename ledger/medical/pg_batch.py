"""The medical store's writes as calls of the PostgreSQL ledger's batches
(``ledger.pg_post``), sharing their commits: a bill's transition (:class:`LedgerTransition`,
folded into the batch's one read and one write by :class:`BillFold`) and a submission
(:class:`LedgerSubmission`, run by ``PgWrites.submissions`` on the writer's connection).

The fold reads the batch's bills without a lock and decides each transition in Python as
``PgWrites.transitions`` does; the write moves the batch's bills together, set-based, as
``medical_transition`` (migration 0008) moves one — the people's locks in person order, then
the bills' rows, each moved only from the state it was decided on, each person's accumulators
once — and a bill moved meanwhile fails the batch's write (``BatchConflict``, or with no
transaction open ``ledger_conflict``), which runs again from a fresh read. The read and the
moves are functions whose plans are kept (migration 0018): the batch plans only their calls.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from ledger.medical.accumulators import Totals
from ledger.medical.bills import BillRecord, BillState, check_transition
from ledger.medical.split import Split
from ledger.medical.sql_writes import BILL_COLUMNS
from ledger.pg_fold import Decided, Fold, FoldedCall

Check = Callable[[BillRecord], BillState]
PERSON_LOCK = 1835361395  # the people's advisory locks' class (migration 0008)
_TYPES = ("varchar", "varchar", "varchar", "bigint", "int", "boolean", "varchar", "int")
_SIGNS = {"commit": 1, "void": -1, "release": 0, "none": 0}  # on the person's accumulators
#: The bill's row as ``medical_bills_read`` returns it (``medical_bill_row``, migration 0018).
BILL_ROW = ", ".join("b." + c.strip() for c in BILL_COLUMNS.split(","))
Runner = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[list[Any]]]


class Decoder(Protocol):
    def record(self, row: Any) -> BillRecord: ...


class Recent(Protocol):
    """The last record of each bill this process read or wrote (``pg_store.Recent``)."""

    def get(self, bill_id: str) -> BillRecord | None: ...

    def put(self, record: BillRecord) -> None: ...


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

    def __init__(self, decoder: Decoder, bill_row: str, recent: Recent | None = None) -> None:
        if bill_row != BILL_ROW:  # what the decoder reads is what the read's function returns
            raise ValueError(f"the bills' fold reads {BILL_ROW}, not {bill_row}")
        self._decoder = decoder
        self._recent = recent  # the bills this process last read or moved (``recall``)

    width = 8  # a bill's move: bill, from, to, at, sign, lock, person, year

    def read_sql(self, keys: int) -> str:
        """The bills as ``medical_bills_read`` (migration 0018) reads them: a kept plan."""
        return f"SELECT medical_bills_read(${keys}::varchar[])"

    def write_ctes(self, first: int, name: str) -> str:
        """The batch's moves together, as ``medical_transition`` (migration 0008) makes one,
        by ``medical_bills_move`` (migration 0018: a kept plan): the people's locks of the moves
        with an effect, in order; every bill moved only from the state it was decided on; each
        person's accumulators by the sum of the effects (``sign`` times the bill's delta),
        once. Materialized: it runs once, where the write's answer first asks for it (after
        the accounts' locks, before the inserts)."""
        columns = ", ".join(f"${first + k}::{kind}[]" for k, kind in enumerate(_TYPES))
        return f"{name} AS MATERIALIZED (SELECT medical_bills_move({columns}) AS ok)"

    def keys(self, calls: Sequence[Any], *, remembered: bool = False) -> list[Any]:
        """The bills ``calls`` decide on; ``remembered``: those this process does not
        remember (:meth:`decide` decides the others from memory)."""
        wanted = dict.fromkeys(call.bill_id for call in calls)
        recent = self._recent
        if remembered and recent is not None:
            return [bill_id for bill_id in wanted if recent.get(bill_id) is None]
        return list(wanted)

    def decide(
        self, calls: Sequence[Any], found: Sequence[Any] | None, *, remembered: bool = False
    ) -> Decided | None:
        """As ``PgWrites.transitions`` decides, from the bills as the batch read them (no lock: a
        move applies only from the state it was decided on, else the batch runs again); a bill
        moved twice in one batch is decided the second time from the first move. The bills read
        and moved are remembered. ``remembered``: a bill not read is decided on as this process
        last read or moved it — None when one is not remembered, or a decision on one is not a
        move (a refusal, a transition with no effect): only a move is checked by the write (it
        applies only from the state it was decided on), so only moves are decided on what may
        be stale (as ``PgWrites.transitions`` refuses only on a fresh read)."""
        records = {row[0]: self._decoder.record(row) for row in found or ()}
        recent = self._recent
        if recent is not None:
            for record in records.values():
                recent.put(record)
        stale: set[str] = set()  # decided on from memory, not moved yet in this batch
        if remembered:
            for call in calls:
                if call.bill_id in records:
                    continue
                kept = None if recent is None else recent.get(call.bill_id)
                if kept is None:
                    return None
                records[call.bill_id] = kept
                stale.add(call.bill_id)
        return self._decide(calls, records, stale)

    def remembers(self, calls: Sequence[Any]) -> bool:
        """Whether every bill ``calls`` decide on is remembered (none for :meth:`keys` to
        read)."""
        return not self.keys(calls, remembered=True) and self._recent is not None

    def _decide(
        self, calls: Sequence[Any], records: dict[str, BillRecord], stale: set[str]
    ) -> Decided | None:
        """Each call's outcome from ``records`` (moved as decided) — None when a decision on a
        ``stale`` record is not a move."""
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
                if write.bill_id in stale:
                    return None
                outcomes.append(error)
                continue
            if effect is None:
                if write.bill_id in stale:
                    return None
                outcomes.append((record, False))
                continue
            moves.append((record, to, effect, write.now_us))
            records[write.bill_id] = moved = _moved(record, to, write.now_us)
            stale.discard(write.bill_id)  # moved from what it was decided on, or not at all
            if self._recent is not None:  # a hint until the write commits: moves are checked
                self._recent.put(moved)
            outcomes.append((moved, True))
        return Decided(outcomes, _columns(moves))


def _moved(record: BillRecord, state: BillState, at_us: int) -> BillRecord:
    """``record`` moved to ``state`` at ``at_us``: ``dataclasses.replace`` without its
    field-by-field rebuild (a quarter of its cost; each exchange moves a bill).

    >>> import datetime as dt
    >>> from ledger.medical.bills import BillState as S
    >>> r = BillRecord("B1", "H1", "N1", "C1", "P1", 2026, dt.date(2026, 1, 2), "d", None,
    ...     None, S.OPEN, 1, 9, 1)
    >>> m = _moved(r, S.APPROVED, 5)
    >>> (m.state, m.updated_at_us, m.expires_at_us, r.state, r.updated_at_us)
    (<BillState.APPROVED: 'approved'>, 5, 9, <BillState.OPEN: 'open'>, 1)
    """
    moved = copy.copy(record)  # a new record, not yet seen by anyone: set before it is shared
    object.__setattr__(moved, "state", state)
    object.__setattr__(moved, "updated_at_us", at_us)
    return moved


def _columns(moves: Sequence[tuple[BillRecord, BillState, str, int]]) -> list[list[Any]]:
    """The write's columns: a bill moved twice in the batch (approved, then completed) moves
    once, from its first state to its last, its signs added (the accumulators' effects are
    each a sign times the bill's delta); in person order.

    >>> from ledger.medical.bills import BillState as S
    >>> class R:
    ...     def __init__(self, state): self.bill_id, self.state, self.person_id, self.year = (
    ...         "B1", state, "P1", 2026)
    >>> _columns([(R(S.OPEN), S.APPROVED, "none", 1), (R(S.APPROVED), S.COMPLETED, "commit", 2)])
    [['B1'], ['open'], ['completed'], [2], [1], [True], ['P1'], [2026]]
    """
    bills: dict[str, list[Any]] = {}
    for record, to, effect, now_us in moves:
        move = bills.setdefault(record.bill_id, [record, record.state, to, now_us, 0, False])
        move[2:] = [to, now_us, move[4] + _SIGNS[effect], move[5] or effect != "none"]
    ordered = sorted(bills.values(), key=lambda m: (m[0].person_id, m[0].year))
    return [
        [m[0].bill_id for m in ordered],
        [m[1].value for m in ordered],
        [m[2].value for m in ordered],
        [m[3] for m in ordered],
        [m[4] for m in ordered],
        [m[5] for m in ordered],
        [m[0].person_id for m in ordered],
        [m[0].year for m in ordered],
    ]

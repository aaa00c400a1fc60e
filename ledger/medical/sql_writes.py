"""The medical store's writes on SQLite, as they run on the writer — a thread of the daemon or
the ledger's writer process (`ledger.writer.process`): objects holding their inputs
(`SubmitWrite`, `TransitionWrite`, `OfflineWrite`), so that they pickle, which find what the
writer keeps of the bills on its connection (`kept`), with the statements they and the
store's reads share. `ledger.medical.sql_store.SqlMedicalStore` hands them to its writer."""

from __future__ import annotations

import datetime as dt
import json
import operator
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ledger.medical.accumulators import ZERO, Totals
from ledger.medical.bills import (
    IN_FLIGHT,
    BillRecord,
    BillState,
    DuplicateBillError,
    Effect,
    check_transition,
)
from ledger.medical.codec import bill_from_dict, bill_to_dict, split_from_dict, split_to_dict
from ledger.medical.split import Bill, Split
from ledger.sql_rows import WriterConnection

TOTAL_NAMES = (
    "eligible_fen",
    "deductible_fen",
    "pooled_fen",
    "personal_account_fen",
    "self_pay_fen",
)
#: A Totals' figures in TOTAL_NAMES order, in one C call (``Totals.as_tuple`` walks
#: ``dataclasses.fields``: microseconds, on the writer).
_figures = operator.attrgetter(*TOTAL_NAMES)
_STATES = {state.value: state for state in BillState}  # dict lookups: an enum call costs µs
IN_FLIGHT_VALUES = sorted(state.value for state in IN_FLIGHT)

#: Decides, inside the write transaction, the state a bill is moved to (or raises).
Check = Callable[[BillRecord], BillState]

BILL_COLUMNS = (
    "bill_id, institution_id, his_bill_no, card_no, person_id, year, service_date,"
    " request_digest, bill_json, split_json, state, created_at_us, expires_at_us, updated_at_us"
)
SELECT_BILL = f"SELECT {BILL_COLUMNS} FROM medical_bills WHERE bill_id = ?"
_INSERT_BILL = (
    f"INSERT INTO medical_bills ({BILL_COLUMNS}, "
    + ", ".join("d_" + name for name in TOTAL_NAMES)
    + ") VALUES ("
    + ", ".join("?" * (14 + len(TOTAL_NAMES)))
    + ")"
)
#: The row as the deciding record says (always, on a row read in the transaction; a record
#: kept from an earlier write when no other write moved the bill since).
_UPDATE_STATE = (
    "UPDATE medical_bills SET state = ?, updated_at_us = ? WHERE bill_id = ? AND state = ?"
    " AND updated_at_us = ? AND request_digest = ?"
)
SELECT_COMMITTED = (
    f"SELECT {', '.join(TOTAL_NAMES)} FROM medical_accumulators WHERE person_id = ? AND year = ?"
)
SELECT_RESERVED = (
    "SELECT "
    + ", ".join(f"coalesce(sum(d_{name}), 0)" for name in TOTAL_NAMES)
    + " FROM medical_bills WHERE person_id = ? AND year = ? AND state IN ("
    + ", ".join(f"'{state}'" for state in IN_FLIGHT_VALUES)
    + ")"
)
_ADD_COMMITTED = (
    "UPDATE medical_accumulators SET "
    + ", ".join(f"{name} = {name} + ?" for name in TOTAL_NAMES)
    + ", lock_version = lock_version + 1 WHERE person_id = ? AND year = ?"
)
_INSERT_COMMITTED = (
    f"INSERT INTO medical_accumulators (person_id, year, {', '.join(TOTAL_NAMES)})"
    f" VALUES (?, ?, {', '.join('?' * len(TOTAL_NAMES))})"
)
_INSERT_OFFLINE = (
    "INSERT INTO medical_offline_counts (key, person_id, year, "
    + ", ".join("d_" + name for name in TOTAL_NAMES)
    + f") VALUES (?, ?, ?, {', '.join('?' * len(TOTAL_NAMES))})"
)


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


class Decoded:
    """Stored bills' lines and splits, decoded from JSON once per store: both are written with
    the bill and never change (its request digest names the submission), while its approval
    and its completion each read the row again inside their writes. Bounded: the oldest
    entries make room."""

    def __init__(self, size_max: int = 4096) -> None:
        self._found: dict[tuple[str, str], tuple[Bill, Split]] = {}
        self._size_max = size_max
        self._lock = threading.Lock()

    def record(self, row: Any) -> BillRecord:
        key = (row[0], row[7])
        found = self._found.get(key)
        if found is None:
            found = bill_from_dict(json.loads(row[8])), split_from_dict(json.loads(row[9]))
            with self._lock:
                if len(self._found) >= self._size_max:
                    del self._found[next(iter(self._found))]
                self._found[key] = found
        return BillRecord(
            bill_id=row[0],
            institution_id=row[1],
            his_bill_no=row[2],
            card_no=row[3],
            person_id=row[4],
            year=row[5],
            service_date=_day(row[6]),
            request_digest=row[7],
            bill=found[0],
            split=found[1],
            state=_STATES[row[10]],
            created_at_us=row[11],
            expires_at_us=row[12],
            updated_at_us=row[13],
        )


def _view(db: sqlite3.Connection, person_id: str, year: int) -> Totals:
    row = db.execute(SELECT_COMMITTED, (person_id, year)).fetchone()
    committed = ZERO if row is None else Totals(*(int(value) for value in row))
    reserved = db.execute(SELECT_RESERVED, (person_id, year)).fetchone()
    return committed + Totals(*(int(value) for value in reserved))


def _add_committed(db: sqlite3.Connection, person_id: str, year: int, delta: Totals) -> None:
    values = _figures(delta)
    if db.execute(_ADD_COMMITTED, (*values, person_id, year)).rowcount == 0:
        db.execute(_INSERT_COMMITTED, (person_id, year, *values))


class Written:
    """Bills as this store's writer last wrote them (submitted or moved), so that the next move
    of one — the advice's completion after the 0200's approval — decides on the record kept,
    without reading its row again: its UPDATE finds the row still as kept (state, update time,
    request digest), or writes nothing and the row is read (another process moved the bill, or
    the kept write was rolled back). Used on the writer only. Bounded: the oldest make room."""

    def __init__(self, size_max: int = 4096) -> None:
        self._kept: dict[str, BillRecord] = {}
        self._size_max = size_max

    def get(self, bill_id: str) -> BillRecord | None:
        return self._kept.get(bill_id)

    def keep(self, record: BillRecord) -> None:
        if len(self._kept) >= self._size_max and record.bill_id not in self._kept:
            del self._kept[next(iter(self._kept))]
        self._kept[record.bill_id] = record


def _updated(db: sqlite3.Connection, record: BillRecord, to: BillState, now_us: int) -> bool:
    """Move the row, if it is as ``record`` says (``_value_``: ``.value`` is a Python-level
    property on 3.11, called twice per transition on the writer)."""
    found = (record.bill_id, record.state._value_, record.updated_at_us, record.request_digest)
    return db.execute(_UPDATE_STATE, (to._value_, now_us, *found)).rowcount == 1


def _moved_record(record: BillRecord, to: BillState, now_us: int) -> BillRecord:
    """``record`` in state ``to`` since ``now_us``: a copy of its fields with those two changed.
    Neither `dataclasses.replace` nor ``BillRecord(**…)`` (3.2 µs: the frozen ``__init__`` sets
    14 fields one by one) but the instance dict copied (0.8 µs); a new object all the same, the
    kept one never changes."""
    moved: BillRecord = object.__new__(BillRecord)
    fields = vars(moved)
    fields.update(vars(record))
    fields["state"], fields["updated_at_us"] = to, now_us
    return moved


def kept(db: sqlite3.Connection) -> tuple[Decoded, Written]:
    """The bills ``db``'s writes decoded and wrote (`WriterConnection.kept`); fresh, kept by
    nobody, on a connection that is not a `WriterConnection`."""
    found: tuple[Decoded, Written] | None = getattr(db, "kept", None)
    if found is None:
        found = Decoded(), Written()
        if isinstance(db, WriterConnection):
            db.kept = found
    return found


@dataclass(frozen=True, slots=True)
class SubmitWrite:
    """The write of `SqlMedicalStore.submit`: ``compute`` splits the bill against the
    person's accumulators as they are in the transaction (it must pickle: a function of the
    module's level, or a `functools.partial` of one)."""

    record: BillRecord
    compute: Callable[[Totals], Split]

    def __call__(self, db: sqlite3.Connection) -> tuple[BillRecord, bool]:
        decoded, written = kept(db)
        record = self.record
        known = db.execute(SELECT_BILL, (record.bill_id,)).fetchone()
        if known is not None:
            if known[7] != record.request_digest:
                raise DuplicateBillError(f"bill number {record.his_bill_no} already used")
            return decoded.record(known), False
        split = self.compute(_view(db, record.person_id, record.year))
        db.execute(
            _INSERT_BILL,
            (
                record.bill_id,
                record.institution_id,
                record.his_bill_no,
                record.card_no,
                record.person_id,
                record.year,
                record.service_date.isoformat(),
                record.request_digest,
                json.dumps(bill_to_dict(record.bill), ensure_ascii=False),
                json.dumps(split_to_dict(split), ensure_ascii=False),
                record.state.value,
                record.created_at_us,
                record.expires_at_us,
                record.updated_at_us,
                *_figures(split.delta),
            ),
        )
        stored = replace(record, split=split)
        written.keep(stored)
        return stored, True


@dataclass(frozen=True, slots=True)
class TransitionWrite:
    """The write moving a bill (see `SqlMedicalStore.transition`): decided on the record kept
    from this writer's last write of the bill when its row is still so, else on the row.
    ``check`` must pickle, like `SubmitWrite`'s ``compute``."""

    bill_id: str
    target: BillState
    now_us: int
    check: Check | None = None

    def _decide(self, record: BillRecord) -> tuple[BillState, Effect | None]:
        to = self.target if self.check is None else self.check(record)
        return to, check_transition(record, to)

    def _moved(
        self, db: sqlite3.Connection, record: BillRecord, to: BillState, effect: Effect
    ) -> tuple[BillRecord, bool]:
        if effect == "commit":
            _add_committed(db, record.person_id, record.year, record.split.delta)
        elif effect == "void":
            _add_committed(db, record.person_id, record.year, ZERO - record.split.delta)
        record = _moved_record(record, to, self.now_us)
        kept(db)[1].keep(record)
        return record, True

    def __call__(self, db: sqlite3.Connection) -> tuple[BillRecord, bool]:
        decoded, written = kept(db)
        known = written.get(self.bill_id)
        if known is not None:
            try:
                to, effect = self._decide(known)
            except Exception:  # decided on the row as it is, below
                effect = None
            if effect is not None and _updated(db, known, to, self.now_us):
                return self._moved(db, known, to, effect)
        row = db.execute(SELECT_BILL, (self.bill_id,)).fetchone()
        if row is None:
            raise KeyError(self.bill_id)
        record = decoded.record(row)
        to, effect = self._decide(record)
        if effect is None:
            return record, False
        _updated(db, record, to, self.now_us)
        return self._moved(db, record, to, effect)


@dataclass(frozen=True, slots=True)
class OfflineWrite:
    """The write of `SqlMedicalStore.post_offline`; ``compute`` pickles, as `SubmitWrite`'s."""

    key: str
    person_id: str
    year: int
    compute: Callable[[Totals], Totals]

    def __call__(self, db: sqlite3.Connection) -> bool:
        found = db.execute("SELECT 1 FROM medical_offline_counts WHERE key = ?", (self.key,))
        if found.fetchone() is not None:
            return False
        delta = self.compute(_view(db, self.person_id, self.year))
        db.execute(_INSERT_OFFLINE, (self.key, self.person_id, self.year, *_figures(delta)))
        _add_committed(db, self.person_id, self.year, delta)
        return True

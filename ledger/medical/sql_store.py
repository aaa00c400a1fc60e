"""Bills and accumulators in SQL: `SqlMedicalStore`, the SQL implementation of
`ledger.medical.bills.MedicalStore`; reference data is `sql_reference`.

SQLite, the ledger's database file, WAL — or PostgreSQL, whose writes are
`ledger.medical.pg_store`'s (native asyncpg, serialised per person, not globally) and whose reads
go through `ledger.pg_bridge` (the same statements over asyncpg).

On SQLite, writes (submit, transition, post_offline) — the settlement's hot path — go
through a `GroupWriter` — or, given the SQLite ledger's writer, through that one (one writer per
file, sharing the ledger's commits) — concurrent callers' writes share one
``BEGIN IMMEDIATE`` transaction and one durable commit (synchronous=FULL), a refusal failing
only its own caller, with the raw ``sqlite3`` driver (DESIGN §6). One writer at a time means the
read-split-reserve of a submission is serialised against every other write: two bills in flight
can never both see the same deductible free. Reads (`get`, `accumulators`, `expirable`) are
deferred reads on a raw connection per reading thread, and never wait for the writer.
Reservations are not a table of their own: they are the delta columns of the bills in flight.

>>> import tempfile, pathlib, datetime as dt
>>> from ledger.migrate import upgrade_sqlite
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.db"
>>> upgrade_sqlite(path)
>>> engine = sqlite_engine(path)
>>> store = SqlMedicalStore(engine)
>>> store.accumulators("P1", 2026)[0].deductible_fen
0
>>> store.close(); engine.dispose()
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

from ledger.group_commit import Writer
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
from ledger.medical.group_write import BATCH_MAX, GroupWriter, LedgerWrites, Writes
from ledger.medical.pg_store import PgWrites
from ledger.medical.split import Bill, Split
from ledger.pg_bridge import PgEngine
from ledger.sql_rows import WriterConnection
from ledger.writer_process import ProcessWriter

TOTAL_NAMES = (
    "eligible_fen",
    "deductible_fen",
    "pooled_fen",
    "personal_account_fen",
    "self_pay_fen",
)
WRITE_OPTION = "medical_write"
#: A Totals' figures in TOTAL_NAMES order, in one C call (``Totals.as_tuple`` walks
#: ``dataclasses.fields``: microseconds, on the writer).
_figures = operator.attrgetter(*TOTAL_NAMES)
_STATES = {state.value: state for state in BillState}  # dict lookups: an enum call costs µs
IN_FLIGHT_VALUES = sorted(state.value for state in IN_FLIGHT)

#: Decides, inside the write transaction, the state a bill is moved to (or raises).
Check = Callable[[BillRecord], BillState]

_BILL_COLUMNS = (
    "bill_id, institution_id, his_bill_no, card_no, person_id, year, service_date,"
    " request_digest, bill_json, split_json, state, created_at_us, expires_at_us, updated_at_us"
)
_SELECT_BILL = f"SELECT {_BILL_COLUMNS} FROM medical_bills WHERE bill_id = ?"
_INSERT_BILL = (
    f"INSERT INTO medical_bills ({_BILL_COLUMNS}, "
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
_SELECT_COMMITTED = (
    f"SELECT {', '.join(TOTAL_NAMES)} FROM medical_accumulators WHERE person_id = ? AND year = ?"
)
_SELECT_RESERVED = (
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


def connect_sqlite(path: Path | str) -> sqlite3.Connection:
    """A raw connection as the medical store writes with it: autocommit mode (explicit BEGIN),
    WAL, synchronous=FULL (durable before the HIS or the POS hears back)."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, factory=WriterConnection
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


def sqlite_engine(path: Path | str) -> Engine:
    """An engine on the ledger's SQLite file whose transactions begin IMMEDIATE."""
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 10}
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the begin event issue BEGIN
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=FULL")  # durable before the HIS hears back
        dbapi_connection.execute("PRAGMA busy_timeout=10000")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite (reads elsewhere stay deferred, which in
    WAL mode neither block nor wait for the writer)."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


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
    row = db.execute(_SELECT_COMMITTED, (person_id, year)).fetchone()
    committed = ZERO if row is None else Totals(*(int(value) for value in row))
    reserved = db.execute(_SELECT_RESERVED, (person_id, year)).fetchone()
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
    """Move the row, if it is as ``record`` says."""
    found = (record.bill_id, record.state.value, record.updated_at_us, record.request_digest)
    return db.execute(_UPDATE_STATE, (to.value, now_us, *found)).rowcount == 1


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
        known = db.execute(_SELECT_BILL, (record.bill_id,)).fetchone()
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
        # not dataclasses.replace: it walks the fields, microseconds more on the writer
        record = BillRecord(**{**vars(record), "state": to, "updated_at_us": self.now_us})
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
        row = db.execute(_SELECT_BILL, (self.bill_id,)).fetchone()
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


class SqlMedicalStore:
    """`ledger_writer`: on SQLite, the ledger's writer on the same file, which then runs the
    store's writes too (one writer per file); without it the store has a `GroupWriter`.
    `pool`: on PostgreSQL, an asyncpg pool of the event loop that calls `transition_async`
    (the daemon's), which then awaits its write there with no thread in between."""

    def __init__(
        self,
        engine: Engine | PgEngine,
        *,
        batch_max: int = BATCH_MAX,
        ledger_writer: Writer | ProcessWriter | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self.engine = engine
        self.writer: Writes | None = None  # SQLite's; PostgreSQL's writes are `_pg`'s
        self._pg: PgWrites | None = None
        self._readers = threading.local()
        self._decoded = Decoded()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()
        if isinstance(engine, PgEngine):
            self._connect: Callable[[], Any] = engine.bridge.connection
            self._pg = PgWrites(engine.bridge, self._decoded, _BILL_COLUMNS, pool)
            return
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database:
            raise ValueError("the medical store runs on the ledger's SQLite file or PostgreSQL")
        if ledger_writer is not None:
            self.writer = LedgerWrites(ledger_writer)
        else:
            self.writer = GroupWriter(lambda: connect_sqlite(database), batch_max=batch_max)
        self._connect = lambda: connect_sqlite(database)

    def _writes(self) -> Writes:
        if self.writer is None:
            raise RuntimeError("no SQLite writer: PostgreSQL writes are native")
        return self.writer

    def close(self) -> None:
        """Close the writer's and the readers' connections (the engine is the caller's)."""
        if self.writer is not None:
            self.writer.close()
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's reading connection, in autocommit mode: each statement reads the
        newest commit, and never waits for the writer (WAL)."""
        db: sqlite3.Connection | None = getattr(self._readers, "db", None)
        if db is None:
            db = self._connect()
            self._readers.db = db
            with self._opened_lock:
                self._opened.append(db)
        yield db

    # -- accumulators ---------------------------------------------------------------------------
    def accumulators(self, person_id: str, year: int) -> tuple[Totals, Totals]:
        if self._pg is not None:
            return self._pg.accumulators(person_id, year)
        with self._reading() as db:
            db.execute("BEGIN")  # one snapshot for both sums
            try:
                row = db.execute(_SELECT_COMMITTED, (person_id, year)).fetchone()
                reserved = db.execute(_SELECT_RESERVED, (person_id, year)).fetchone()
            finally:
                db.execute("ROLLBACK")
        committed = ZERO if row is None else Totals(*(int(value) for value in row))
        return committed, committed + Totals(*(int(value) for value in reserved))

    # -- bills ----------------------------------------------------------------------------------
    def submit(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        if self._pg is not None:
            return self._pg.submit(record, compute)

        return self._writes().run(SubmitWrite(record, compute))

    def get(self, bill_id: str) -> BillRecord | None:
        with self._reading() as db:
            row = db.execute(_SELECT_BILL, (bill_id,)).fetchone()
        return None if row is None else self._decoded.record(row)

    def transition(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None = None
    ) -> tuple[BillRecord, bool]:
        """Move a bill to `target` — or to the state `check` decides from the bill as it is
        inside the write transaction (a check may also raise) — (record, changed); KeyError
        when the bill is unknown."""
        if self._pg is not None:
            return self._pg.transition(bill_id, target, now_us, check)
        return self._writes().run(TransitionWrite(bill_id, target, now_us, check))

    async def transition_async(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None = None
    ) -> tuple[BillRecord, bool]:
        """`transition` from the event loop: on the ledger's writer the write is queued as its
        job and awaited, with no thread in between; on PostgreSQL, awaited on the store's pool
        (through a thread without one)."""
        if self._pg is not None:
            return await self._pg.transition_async(bill_id, target, now_us, check)
        return await self._writes().submit(TransitionWrite(bill_id, target, now_us, check))

    @property
    def posts_with_ledger(self) -> bool:
        """Whether its writes share the SQLite ledger's transactions (`transition_write`)."""
        return isinstance(self.writer, LedgerWrites)

    def transition_write(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None
    ) -> Callable[[sqlite3.Connection], tuple[BillRecord, bool]]:
        """The write of `transition`, for the ledger's writer to run inside a job of its own
        (`SqliteLedger.post_and_call`): KeyError when the bill is unknown. Only when
        `posts_with_ledger`."""
        if not self.posts_with_ledger:
            raise RuntimeError("the medical store does not write on the ledger's writer")
        return TransitionWrite(bill_id, target, now_us, check)

    def expirable(self, now_us: int, limit: int) -> list[str]:
        marks = ", ".join("?" * len(IN_FLIGHT_VALUES))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT bill_id FROM medical_bills WHERE state IN ({marks})"
                " AND expires_at_us < ? ORDER BY bill_id LIMIT ?",
                (*IN_FLIGHT_VALUES, now_us, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def post_offline(
        self, key: str, person_id: str, year: int, compute: Callable[[Totals], Totals]
    ) -> bool:
        if self._pg is not None:
            return self._pg.post_offline(key, person_id, year, compute)

        return self._writes().run(OfflineWrite(key, person_id, year, compute))

"""Bills and accumulators in SQL: `SqlMedicalStore`, the SQL implementation of
`ledger.medical.bills.MedicalStore`; reference data is `sql_reference`.

SQLite, the ledger's database file, WAL — or PostgreSQL, whose writes are
`ledger.medical.pg_store`'s (native asyncpg, serialised per person, not globally) and whose reads
go through `ledger.pg_bridge` (the same statements over asyncpg).

On SQLite, writes (submit, transition, post_offline) — the settlement's hot path — are `Call`
jobs on a SQLite writer (`ledger.writer`): the ledger's, given it (one writer per file, sharing
the ledger's commits), else one of the store's own — concurrent callers' writes share one
``BEGIN IMMEDIATE`` transaction and one durable commit (synchronous=FULL), a refusal failing
only its own caller, with the raw ``sqlite3`` driver (DESIGN §6). One writer at a time means the
read-split-reserve of a submission is serialised against every other write: two bills in flight
can never both see the same deductible free. Reads (`get`, `accumulators`, `expirable`) are
deferred reads on a raw connection per reading thread, and never wait for the writer.
Reservations are not a table of their own: they are the delta columns of the bills in flight.
The writes themselves, as they run on the writer, are `ledger.medical.sql_writes`.

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
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

from ledger.medical.accumulators import ZERO, Totals
from ledger.medical.bills import (
    BillRecord,
    BillState,
    DayTotal,
    Held,
)
from ledger.medical.card_copies import (
    SELECT_CONSENT,
    SELECT_COPY,
    SELECT_HEALTH,
    SELECT_VISITS_OF,
    Consent,
    HealthCopy,
    HealthWritten,
    KeepHealth,
    KeepVisit,
    OpenConsent,
    VisitCopy,
)
from ledger.medical.pg_batch import LedgerTransition
from ledger.medical.pg_store import PgWrites
from ledger.medical.split import Split
from ledger.medical.sql_writes import (
    BILL_COLUMNS,
    IN_FLIGHT_VALUES,
    SELECT_BILL,
    SELECT_COMMITTED,
    SELECT_RESERVED,
    Check,
    Decoded,
    OfflineWrite,
    SubmitWrite,
    TransitionWrite,
)
from ledger.pg_calls import LedgerCalls
from ledger.pg_engine import PgEngine
from ledger.sql_rows import WriterConnection
from ledger.writer.engine import Writer
from ledger.writer.jobs import Call, Stats, Submits, Write
from ledger.writer.store import SqliteStore

T = TypeVar("T")
WRITE_OPTION = "medical_write"
BATCH_MAX = 256  # the store's own writer's (the ledger's has its own)


class LedgerWrites:
    """The medical store's writes as `Call` jobs on a SQLite writer (one connection, one
    transaction and one durable commit per group): each write fails alone (in a savepoint
    when it wrote before failing), and returns once its batch committed. `run` is called from
    threads other than the writer's; `submit` from the event loop, which queues the job and
    awaits it like the ledger's own (no thread hop). ``own``: a writer of the store's own
    (CLIs, the demo), closed with it; else the writer is the ledger's and closes with it."""

    def __init__(self, writer: Submits, *, own: Writer | None = None) -> None:
        self._writer, self._own = writer, own
        self._closed = False

    def run(self, operation: Write[T]) -> T:
        if self._closed:
            raise RuntimeError("the medical store is closed")
        value: T = self._writer.run(Call(operation))
        return value

    async def submit(self, operation: Write[T]) -> T:
        if self._closed:
            raise RuntimeError("the medical store is closed")
        value: T = await self._writer.submit(Call(operation))
        return value

    @property
    def waiting(self) -> int:
        return self._writer.waiting

    @property
    def stats(self) -> Stats:
        return self._writer.stats

    def close(self) -> None:
        """Refuse new writes; close the store's own writer (the ledger's closes with it)."""
        self._closed = True
        if self._own is not None:
            self._own.close()


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


class SqlMedicalStore:
    """`ledger_writer`: on SQLite, the ledger's writer on the same file, which then runs the
    store's writes too (one writer per file); without it the store has a writer of its own.
    `pool`: on PostgreSQL, an asyncpg pool of the event loop that calls `transition_async`
    (the daemon's), which then awaits its write there with no thread in between."""

    def __init__(
        self,
        engine: Engine | PgEngine,
        *,
        batch_max: int = BATCH_MAX,
        ledger_writer: Submits | None = None,
        pool: asyncpg.Pool | None = None,
        pg_ledger: LedgerCalls | None = None,
    ) -> None:
        self.engine = engine
        self.writer: LedgerWrites | None = None  # SQLite's; PostgreSQL's writes are `_pg`'s
        self._pg: PgWrites | None = None
        self._pg_ledger: LedgerCalls | None = None  # runs the async transitions in its batches
        self._shared = False  # writes in the SQLite ledger's transactions
        self._readers = threading.local()
        self._decoded = Decoded()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()
        self._closed = False
        if isinstance(engine, PgEngine):
            self._connect: Callable[[], Any] = engine.bridge.connection
            self._pg = PgWrites(engine.bridge, self._decoded, BILL_COLUMNS, pool)
            self._pg_ledger = pg_ledger  # the daemon's PgLedger, on this database
            self._shared = pg_ledger is not None
            return
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database:
            raise ValueError("the medical store runs on the ledger's SQLite file or PostgreSQL")
        self._shared = ledger_writer is not None
        if ledger_writer is not None:
            self.writer = LedgerWrites(ledger_writer)
        else:
            own = SqliteStore(database).writer(batch_max=batch_max)
            own.start()
            self.writer = LedgerWrites(own, own=own)
        self._connect = lambda: connect_sqlite(database)

    def _writes(self) -> LedgerWrites:
        if self.writer is None:
            raise RuntimeError("no SQLite writer: PostgreSQL writes are native")
        return self.writer

    def close(self) -> None:
        """Close the writer's and the readers' connections (the engine is the caller's)."""
        self._closed = True
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
        if self._closed:
            raise RuntimeError("the medical store is closed")
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
                row = db.execute(SELECT_COMMITTED, (person_id, year)).fetchone()
                reserved = db.execute(SELECT_RESERVED, (person_id, year)).fetchone()
            finally:
                db.execute("ROLLBACK")
        committed = ZERO if row is None else Totals(*(int(value) for value in row))
        return committed, committed + Totals(*(int(value) for value in reserved))

    # -- bills ----------------------------------------------------------------------------------
    def submit(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        if self._pg is not None and self._pg_ledger is not None:  # in the ledger's commits
            found: tuple[BillRecord, bool] = self._pg_ledger.call_from_thread(
                self._pg.ledger_submission(record, compute)
            )
            return found
        if self._pg is not None:
            return self._pg.submit(record, compute)
        return self._writes().run(SubmitWrite(record, compute))

    def get(self, bill_id: str) -> BillRecord | None:
        with self._reading() as db:
            row = db.execute(SELECT_BILL, (bill_id,)).fetchone()
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
        job and awaited, with no thread in between; on PostgreSQL, a job of the ledger's
        batches given ``pg_ledger`` (sharing their commits), else awaited on the store's pool
        (through a thread without one)."""
        if self._pg is not None and self._pg_ledger is not None:
            write = self._pg.ledger_transition(bill_id, target, now_us, check)
            found: tuple[BillRecord, bool] = await self._pg_ledger.call(write)
            return found
        if self._pg is not None:
            return await self._pg.transition_async(bill_id, target, now_us, check)
        return await self._writes().submit(TransitionWrite(bill_id, target, now_us, check))

    # -- the centre's copies of the cards' visit records (ledger.medical.card_copies) -----------
    async def keep_visit_async(self, copy: VisitCopy) -> None:
        if self._pg is not None:
            await self._pg.keep_visit(copy)
            return
        await self._writes().submit(KeepVisit(copy))

    def visit_copy(self, bill_id: str) -> VisitCopy | None:
        with self._reading() as db:
            row = db.execute(SELECT_COPY, (bill_id,)).fetchone()
        if row is None:
            return None
        return VisitCopy(str(row[0]), str(row[1]), bytes(row[2]), int(row[3]), int(row[4]))

    async def keep_health_async(self, copy: HealthCopy) -> None:
        if self._pg is not None:
            await self._pg.keep_health(copy)
            return
        await self._writes().submit(KeepHealth(copy))

    def health_copy(self, person_id: str) -> HealthCopy | None:
        with self._reading() as db:
            row = db.execute(SELECT_HEALTH, (person_id,)).fetchone()
        if row is None:
            return None
        return HealthCopy(
            str(row[0]), bytes(row[1]), int(row[2]), str(row[3]), int(row[4]), bool(row[5])
        )

    async def health_written_async(self, person_id: str, updated_at_us: int) -> None:
        if self._pg is not None:
            await self._pg.health_written(person_id, updated_at_us)
            return
        await self._writes().submit(HealthWritten(person_id, updated_at_us))

    def visit_copies_of(self, application_serial: str) -> list[VisitCopy]:
        with self._reading() as db:
            rows = db.execute(SELECT_VISITS_OF, (application_serial,)).fetchall()
        return [VisitCopy(str(r[0]), str(r[1]), bytes(r[2]), int(r[3]), int(r[4])) for r in rows]

    async def open_consent_async(self, consent: Consent) -> None:
        if self._pg is not None:
            await self._pg.open_consent(consent)
            return
        await self._writes().submit(OpenConsent(consent))

    def consent(self, institution_id: str, application_serial: str) -> Consent | None:
        with self._reading() as db:
            row = db.execute(SELECT_CONSENT, (institution_id, application_serial)).fetchone()
        return None if row is None else Consent(str(row[0]), str(row[1]), int(row[2]), int(row[3]))

    @property
    def posts_with_ledger(self) -> bool:
        """Whether its writes share the ledger's transactions (`transition_write`): the SQLite
        ledger's writer given, or on PostgreSQL ``pg_ledger`` (the ledger on this database)."""
        return self._shared

    def transition_write(
        self, bill_id: str, target: BillState, now_us: int, check: Check | None
    ) -> Write[tuple[BillRecord, bool]] | LedgerTransition | None:
        """The write of `transition`, for the ledger's writer to run inside a job of its own
        (`SqliteLedger.post_and_call`, `PgLedger.post_and_call`): KeyError when the bill is
        unknown. None unless `posts_with_ledger`."""
        if not self._shared:
            return None
        if self._pg is not None:
            return self._pg.ledger_transition(bill_id, target, now_us, check)
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

    def bills_of(
        self, institution_id: str, after_no: str, since_us: int, limit: int
    ) -> list[BillRecord]:
        """Along the (institution_id, his_bill_no) unique index; `since_us` filters."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {BILL_COLUMNS} FROM medical_bills WHERE institution_id = ?"
                " AND his_bill_no > ? AND created_at_us >= ? ORDER BY his_bill_no LIMIT ?",
                (institution_id, after_no, since_us, limit),
            ).fetchall()
        return [self._decoded.record(row) for row in rows]

    def bills_dated(
        self, institution_id: str, service_date: dt.date, after_no: str, limit: int
    ) -> list[BillRecord]:
        """Along the (institution_id, his_bill_no) unique index; the date filters."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {BILL_COLUMNS} FROM medical_bills WHERE institution_id = ?"
                " AND service_date = ? AND his_bill_no > ? ORDER BY his_bill_no LIMIT ?",
                (institution_id, self._day(service_date), after_no, limit),
            ).fetchall()
        return [self._decoded.record(row) for row in rows]

    def dated_totals(self, institution_id: str, service_date: dt.date) -> list[DayTotal]:
        """A bill's shares are its accumulator delta's (`d_…`); its total is their sum."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT state, count(*), coalesce(sum(d_personal_account_fen), 0),"
                " coalesce(sum(d_pooled_fen), 0), coalesce(sum(d_self_pay_fen), 0)"
                " FROM medical_bills WHERE institution_id = ? AND service_date = ?"
                " GROUP BY state ORDER BY state",
                (institution_id, self._day(service_date)),
            ).fetchall()
        return [
            DayTotal(BillState(state), n, pa + po + sp, pa, po, sp)
            for state, n, pa, po, sp in ((r[0], *map(int, r[1:])) for r in rows)
        ]

    def _day(self, service_date: dt.date) -> dt.date | str:
        """A date parameter: asyncpg takes the date, SQLite its ISO text (as stored)."""
        return service_date if self._pg is not None else service_date.isoformat()

    def held(self, institution_id: str, person_id: str, year: int, now_us: int) -> Held:
        """The institution's open bills for the person's year, not expired at `now_us` (a
        bill's totals are its shares' deltas added up)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT count(*),"
                " coalesce(sum(d_personal_account_fen + d_pooled_fen + d_self_pay_fen), 0)"
                " FROM medical_bills WHERE person_id = ? AND year = ? AND state = 'open'"
                " AND institution_id = ? AND expires_at_us >= ?",
                (person_id, year, institution_id, now_us),
            ).fetchone()
        return Held(int(row[0]), int(row[1]))

    def post_offline(
        self, key: str, person_id: str, year: int, compute: Callable[[Totals], Totals]
    ) -> bool:
        if self._pg is not None:
            return self._pg.post_offline(key, person_id, year, compute)

        return self._writes().run(OfflineWrite(key, person_id, year, compute))

"""Bills and accumulators in SQL (SQLAlchemy Core, a cold path): `SqlMedicalStore`, the SQL
implementation of `ledger.medical.bills.MedicalStore`; reference data is `sql_reference`.

SQLite: the ledger's database file, WAL; every write transaction here starts with BEGIN
IMMEDIATE (`write_transaction`), so the read-split-reserve of a submission is serialised
against any other writer (two bills in flight can never both see the same deductible free).
Reads stay deferred. Reservations are not a table of their own: they are the delta columns of
the bills in flight.

>>> import tempfile, pathlib, datetime as dt
>>> from ledger.migrate import upgrade_sqlite
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.db"
>>> upgrade_sqlite(path)
>>> engine = sqlite_engine(path)
>>> SqlMedicalStore(engine).accumulators("P1", 2026)[0].deductible_fen
0
>>> engine.dispose()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Connection

from ledger.medical.accumulators import ZERO, Totals
from ledger.medical.bills import (
    IN_FLIGHT,
    BillRecord,
    BillState,
    DuplicateBillError,
    check_transition,
)
from ledger.medical.codec import bill_from_dict, bill_to_dict, split_from_dict, split_to_dict
from ledger.medical.split import Split
from ledger.medical.tables import (
    medical_accumulators,
    medical_bills,
    medical_offline_counts,
)

TOTAL_NAMES = (
    "eligible_fen",
    "deductible_fen",
    "pooled_fen",
    "personal_account_fen",
    "self_pay_fen",
)
WRITE_OPTION = "medical_write"
IN_FLIGHT_VALUES = sorted(state.value for state in IN_FLIGHT)


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


def _totals(row: Any, prefix: str = "") -> Totals:
    return Totals(*(int(getattr(row, prefix + name)) for name in TOTAL_NAMES))


def _delta_values(delta: Totals, prefix: str = "d_") -> dict[str, int]:
    return {prefix + name: value for name, value in zip(TOTAL_NAMES, delta.as_tuple(), strict=True)}


def _record(row: Any) -> BillRecord:
    return BillRecord(
        bill_id=row.bill_id,
        institution_id=row.institution_id,
        his_bill_no=row.his_bill_no,
        card_no=row.card_no,
        person_id=row.person_id,
        year=row.year,
        service_date=row.service_date,
        request_digest=row.request_digest,
        bill=bill_from_dict(json.loads(row.bill_json)),
        split=split_from_dict(json.loads(row.split_json)),
        state=BillState(row.state),
        created_at_us=row.created_at_us,
        expires_at_us=row.expires_at_us,
        updated_at_us=row.updated_at_us,
    )


class SqlMedicalStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- accumulators ---------------------------------------------------------------------------
    @staticmethod
    def _committed(connection: Connection, person_id: str, year: int) -> Totals:
        acc = medical_accumulators.c
        row = connection.execute(
            select(medical_accumulators).where(acc.person_id == person_id, acc.year == year)
        ).first()
        return ZERO if row is None else _totals(row)

    @staticmethod
    def _reserved(connection: Connection, person_id: str, year: int) -> Totals:
        b = medical_bills.c
        sums = [func.coalesce(func.sum(getattr(b, "d_" + name)), 0) for name in TOTAL_NAMES]
        row = connection.execute(
            select(*sums).where(
                b.person_id == person_id, b.year == year, b.state.in_(IN_FLIGHT_VALUES)
            )
        ).one()
        return Totals(*(int(value) for value in row))

    def _view(self, connection: Connection, person_id: str, year: int) -> Totals:
        return self._committed(connection, person_id, year) + self._reserved(
            connection, person_id, year
        )

    @staticmethod
    def _add_committed(connection: Connection, person_id: str, year: int, delta: Totals) -> None:
        acc = medical_accumulators.c
        changes = {
            name: getattr(acc, name) + value
            for name, value in zip(TOTAL_NAMES, delta.as_tuple(), strict=True)
        }
        done = connection.execute(
            update(medical_accumulators)
            .where(acc.person_id == person_id, acc.year == year)
            .values(**changes, lock_version=acc.lock_version + 1)
        )
        if done.rowcount == 0:
            values = _delta_values(delta, prefix="")
            connection.execute(
                insert(medical_accumulators).values(person_id=person_id, year=year, **values)
            )

    def accumulators(self, person_id: str, year: int) -> tuple[Totals, Totals]:
        with self.engine.connect() as connection:
            committed = self._committed(connection, person_id, year)
            return committed, committed + self._reserved(connection, person_id, year)

    # -- bills ----------------------------------------------------------------------------------
    def submit(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        with write_transaction(self.engine) as connection:
            b = medical_bills.c
            known = connection.execute(
                select(medical_bills).where(b.bill_id == record.bill_id)
            ).first()
            if known is not None:
                if known.request_digest != record.request_digest:
                    raise DuplicateBillError(f"bill number {record.his_bill_no} already used")
                return _record(known), False
            split = compute(self._view(connection, record.person_id, record.year))
            connection.execute(
                insert(medical_bills).values(
                    bill_id=record.bill_id,
                    institution_id=record.institution_id,
                    his_bill_no=record.his_bill_no,
                    card_no=record.card_no,
                    person_id=record.person_id,
                    year=record.year,
                    service_date=record.service_date,
                    request_digest=record.request_digest,
                    bill_json=json.dumps(bill_to_dict(record.bill), ensure_ascii=False),
                    split_json=json.dumps(split_to_dict(split), ensure_ascii=False),
                    state=record.state.value,
                    created_at_us=record.created_at_us,
                    expires_at_us=record.expires_at_us,
                    updated_at_us=record.updated_at_us,
                    **_delta_values(split.delta),
                )
            )
        stored = self.get(record.bill_id)
        assert stored is not None
        return stored, True

    def get(self, bill_id: str) -> BillRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(medical_bills).where(medical_bills.c.bill_id == bill_id)
            ).first()
            connection.rollback()
        return None if row is None else _record(row)

    def transition(self, bill_id: str, target: BillState, now_us: int) -> tuple[BillRecord, bool]:
        with write_transaction(self.engine) as connection:
            b = medical_bills.c
            row = connection.execute(select(medical_bills).where(b.bill_id == bill_id)).first()
            if row is None:
                raise KeyError(bill_id)
            record = _record(row)
            effect = check_transition(record, target)
            if effect is None:
                return record, False
            if effect == "commit":
                self._add_committed(connection, record.person_id, record.year, record.split.delta)
            elif effect == "void":
                self._add_committed(
                    connection, record.person_id, record.year, ZERO - record.split.delta
                )
            connection.execute(
                update(medical_bills)
                .where(b.bill_id == bill_id, b.state == record.state.value)
                .values(state=target.value, updated_at_us=now_us)
            )
        return replace(record, state=target, updated_at_us=now_us), True

    def expirable(self, now_us: int, limit: int) -> list[str]:
        b = medical_bills.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(b.bill_id)
                .where(b.state.in_(IN_FLIGHT_VALUES), b.expires_at_us < now_us)
                .order_by(b.bill_id)
                .limit(limit)
            )
            return [row.bill_id for row in rows]

    def post_offline(
        self, key: str, person_id: str, year: int, compute: Callable[[Totals], Totals]
    ) -> bool:
        with write_transaction(self.engine) as connection:
            o = medical_offline_counts.c
            if connection.execute(select(o.key).where(o.key == key)).first() is not None:
                return False
            delta = compute(self._view(connection, person_id, year))
            connection.execute(
                insert(medical_offline_counts).values(
                    key=key, person_id=person_id, year=year, **_delta_values(delta)
                )
            )
            self._add_committed(connection, person_id, year, delta)
            return True

"""The SQL side of the medical rules (SQLAlchemy Core, a cold path): `SqlMedicalStore` (bills and
accumulators), `SqlDirectory` (reference data read from the ledger's cards, cardholders and
institutions and the medical tables) and `ReferenceData` (imports: catalogue versions, policy
years, authorisations, HIS credentials).

SQLite: the ledger's database file, WAL; every transaction here starts with BEGIN IMMEDIATE, so
the read-split-reserve of a submission is serialised against any other writer (two bills in
flight can never both see the same deductible free). Reservations are not a table of their own:
they are the delta columns of the bills in flight.

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

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Connection

from ledger.medical.accumulators import ZERO, Totals
from ledger.medical.bills import (
    IN_FLIGHT,
    BillRecord,
    BillState,
    DuplicateBillError,
    check_transition,
)
from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage, effective_on
from ledger.medical.codec import bill_from_dict, bill_to_dict, split_from_dict, split_to_dict
from ledger.medical.directory import Cardholder
from ledger.medical.policy import Category, Policy, parse_policy
from ledger.medical.split import Split
from ledger.medical.tables import (
    his_credentials,
    medical_accumulators,
    medical_authorisations,
    medical_bills,
    medical_catalogue_items,
    medical_catalogue_versions,
    medical_offline_counts,
    medical_policies,
)
from ledger.schema import cardholders, cards, institutions

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


class SqlDirectory:
    """Reference data from the ledger's tables (cards, cardholders, institutions) and the medical
    ones. Catalogue versions and policies are parsed once per instance and cached."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._catalogues: dict[int, CatalogueVersion] = {}
        self._policies: dict[int, Policy] = {}

    def _one(self, statement: Any) -> Any:
        with self.engine.connect() as connection:
            row = connection.execute(statement).first()
            connection.rollback()
        return row

    def _holder(self, condition: Any) -> Cardholder | None:
        row = self._one(
            select(
                cards.c.card_no,
                cards.c.application_serial,
                cards.c.status,
                cardholders.c.id,
                cardholders.c.category,
            )
            .join(cardholders, cards.c.cardholder_id == cardholders.c.id)
            .where(condition)
        )
        if row is None:
            return None
        return Cardholder(
            row.card_no, row.application_serial, row.id, Category(row.category), row.status
        )

    def cardholder(self, card_no: str) -> Cardholder | None:
        return self._holder(cards.c.card_no == card_no)

    def cardholder_by_serial(self, application_serial: str) -> Cardholder | None:
        return self._holder(cards.c.application_serial == application_serial)

    def institution_level(self, institution_id: str) -> int | None:
        row = self._one(select(institutions.c.level).where(institutions.c.id == institution_id))
        return None if row is None or row.level is None else int(row.level)

    def authorised(self, person_id: str, year: int) -> frozenset[str]:
        a = medical_authorisations.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(a.category).where(
                    a.person_id == person_id, a.year == year, a.revoked_at_us.is_(None)
                )
            ).all()
            connection.rollback()
        return frozenset(row.category for row in rows)

    def catalogue(self, version: int) -> CatalogueVersion | None:
        if version not in self._catalogues:
            loaded = load_catalogue(self.engine, version)
            if loaded is None:
                return None
            self._catalogues[version] = loaded
        return self._catalogues[version]

    def catalogue_on(self, day: dt.date) -> CatalogueVersion | None:
        v = medical_catalogue_versions.c
        with self.engine.connect() as connection:
            rows = connection.execute(select(v.version, v.effective_from)).all()
            connection.rollback()
        headers = [CatalogueVersion(row.version, row.effective_from) for row in rows]
        chosen = effective_on(headers, day)
        return None if chosen is None else self.catalogue(chosen.number)

    def policy(self, year: int) -> Policy | None:
        if year not in self._policies:
            row = self._one(select(medical_policies.c.text).where(medical_policies.c.year == year))
            if row is None:
                return None
            self._policies[year] = parse_policy(row.text)
        return self._policies[year]


def load_catalogue(engine: Engine, version: int) -> CatalogueVersion | None:
    v, i = medical_catalogue_versions.c, medical_catalogue_items.c
    with engine.connect() as connection:
        head = connection.execute(select(v.effective_from).where(v.version == version)).first()
        rows = connection.execute(select(medical_catalogue_items).where(i.version == version))
        items = {
            row.code: CatalogueItem(
                row.code,
                row.name,
                row.unit,
                row.ceiling_fen,
                Coverage(row.coverage),
                row.self_pay_bp,
            )
            for row in rows
        }
        connection.rollback()
    return None if head is None else CatalogueVersion(version, head.effective_from, items)


def catalogue_versions(engine: Engine) -> list[tuple[int, dt.date]]:
    v = medical_catalogue_versions.c
    with engine.connect() as connection:
        rows = connection.execute(select(v.version, v.effective_from).order_by(v.version)).all()
        connection.rollback()
    return [(row.version, row.effective_from) for row in rows]


class ReferenceData:
    """Writes of the back office: each import in one transaction, refused when already there."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_catalogue(
        self, version: CatalogueVersion, digest: str, now_us: int, operator: str
    ) -> bool:
        """Store a catalogue version; False when that version number is already stored."""
        v = medical_catalogue_versions.c
        with write_transaction(self.engine) as connection:
            if connection.execute(select(v.version).where(v.version == version.number)).first():
                return False
            connection.execute(
                insert(medical_catalogue_versions).values(
                    version=version.number,
                    effective_from=version.effective_from,
                    file_digest=digest,
                    imported_at_us=now_us,
                    imported_by=operator,
                )
            )
            rows = [
                {
                    "version": version.number,
                    "code": item.code,
                    "name": item.name,
                    "unit": item.unit,
                    "ceiling_fen": item.ceiling_fen,
                    "coverage": item.coverage.value,
                    "self_pay_bp": item.self_pay_bp,
                }
                for item in version.items.values()
            ]
            if rows:
                connection.execute(insert(medical_catalogue_items), rows)
        return True

    def set_policy(self, text: str, now_us: int, operator: str) -> Policy:
        """Store a year's policy (parsed first, so a bad file stores nothing); a year whose
        policy exists is refused (ValueError): policies are versioned by year, not edited."""
        policy = parse_policy(text)
        p = medical_policies.c
        with write_transaction(self.engine) as connection:
            if connection.execute(select(p.year).where(p.year == policy.year)).first():
                raise ValueError(f"the {policy.year} policy is already stored")
            connection.execute(
                insert(medical_policies).values(
                    year=policy.year, text=text, imported_at_us=now_us, imported_by=operator
                )
            )
        return policy

    def authorise(
        self, person_id: str, category: str, year: int, now_us: int, operator: str
    ) -> bool:
        """Authorise a person for a special category for a year; False when already."""
        a = medical_authorisations.c
        key = and_(a.person_id == person_id, a.category == category, a.year == year)
        with write_transaction(self.engine) as connection:
            row = connection.execute(select(a.revoked_at_us).where(key)).first()
            if row is not None and row.revoked_at_us is None:
                return False
            if row is not None:
                connection.execute(
                    update(medical_authorisations)
                    .where(key)
                    .values(
                        revoked_at_us=None,
                        granted_at_us=now_us,
                        granted_by=operator,
                        written_to_card=False,
                    )
                )
            else:
                connection.execute(
                    insert(medical_authorisations).values(
                        person_id=person_id,
                        category=category,
                        year=year,
                        granted_at_us=now_us,
                        granted_by=operator,
                    )
                )
        return True

    def revoke(self, person_id: str, category: str, year: int, now_us: int) -> bool:
        a = medical_authorisations.c
        with write_transaction(self.engine) as connection:
            done = connection.execute(
                update(medical_authorisations)
                .where(
                    a.person_id == person_id,
                    a.category == category,
                    a.year == year,
                    a.revoked_at_us.is_(None),
                )
                .values(revoked_at_us=now_us)
            )
        return bool(done.rowcount)

    def authorisations(self, person_id: str) -> list[tuple[str, int, bool]]:
        a = medical_authorisations.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(a.category, a.year, a.revoked_at_us)
                .where(a.person_id == person_id)
                .order_by(a.year, a.category)
            ).all()
            connection.rollback()
        return [(row.category, row.year, row.revoked_at_us is None) for row in rows]

    # -- HIS credentials ------------------------------------------------------------------------
    def issue_credential(self, institution_id: str, now_us: int) -> str:
        """A new bearer token for an institution (shown once; only its salted hash is kept)."""
        token = secrets.token_urlsafe(24)
        salt = secrets.token_hex(16)
        values = {
            "token_hash": token_hash(salt, token),
            "salt": salt,
            "created_at_us": now_us,
            "status": "active",
        }
        c = his_credentials.c
        with write_transaction(self.engine) as connection:
            done = connection.execute(
                update(his_credentials).where(c.institution_id == institution_id).values(**values)
            )
            if not done.rowcount:
                connection.execute(
                    insert(his_credentials).values(institution_id=institution_id, **values)
                )
        return token

    def check_credential(self, institution_id: str, token: str) -> bool:
        c = his_credentials.c
        with self.engine.connect() as connection:
            row = connection.execute(
                select(c.token_hash, c.salt).where(
                    c.institution_id == institution_id, c.status == "active"
                )
            ).first()
            connection.rollback()
        if row is None:
            token_hash("0" * 32, token)  # the same work either way
            return False
        return hmac.compare_digest(row.token_hash, token_hash(row.salt, token))


def token_hash(salt: str, token: str) -> str:
    """Salted SHA-256 of a token (192 random bits: nothing to stretch, unlike a password).

    >>> len(token_hash("00", "t"))
    64
    """
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

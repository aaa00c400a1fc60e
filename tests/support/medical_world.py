"""A small world for service and HIS tests: two hospitals, three cardholders, the test
catalogue and the example policy, on the in-memory store or on SQLite."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from ledger.medical.bills import MemoryMedicalStore
from ledger.medical.directory import Cardholder, MemoryDirectory
from ledger.medical.limits import BillLimits
from ledger.medical.policy import EXAMPLE, Category
from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import ReferenceData, SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from ledger.migrate import upgrade_sqlite
from ledger.schema import cardholders, cards, institutions
from tests.support.medical import CATALOGUE, POLICY

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 25)
NOW_US = int(NOW.timestamp() * 1_000_000)

HOLDERS = [
    Cardholder("6200000000000000011", "0000000000000011", "P11", Category.EMPLOYED),
    Cardholder("6200000000000000029", "0000000000000029", "P29", Category.RETIRED),
    Cardholder("6200000000000000037", "0000000000000037", "P37", Category.EMPLOYED, "lost"),
]
LEVELS = {"H001": 1, "H002": 2}
AUTHORISED = {("P29", 2026): frozenset({"chronic"})}


#: Limits no bill of the property tests reaches (they test the split, not plausibility).
LENIENT = BillLimits(ceiling_multiple_max=0, total_max_fen_by_level=(10**15, 10**15, 10**15))


def memory_service(limits: BillLimits | None = None) -> MedicalService:
    directory = MemoryDirectory(
        cards={holder.card_no: holder for holder in HOLDERS},
        levels=dict(LEVELS),
        authorisations=dict(AUTHORISED),
        catalogues=[CATALOGUE],
        policies={2026: POLICY},
    )
    return MedicalService(MemoryMedicalStore(), directory, limits=limits)


def sql_world(path: Path) -> Engine:
    upgrade_sqlite(path)
    engine = sqlite_engine(path)
    populate(engine)
    return engine


def populate(engine: Any) -> None:
    """The institutions, cardholders, cards and reference data of the service tests (an
    SQLAlchemy engine, or a ``PgEngine`` on PostgreSQL)."""
    with engine.begin() as connection:
        connection.execute(
            insert(institutions),
            [
                {"id": "U1", "kind": "employer_unit", "name": "unit", "level": None},
                *(
                    {"id": i, "kind": "hospital", "name": i, "level": lv}
                    for i, lv in LEVELS.items()
                ),
            ],
        )
        for holder in HOLDERS:
            connection.execute(
                insert(cardholders).values(
                    id=holder.person_id,
                    ssn="S" + holder.person_id,
                    name="张三",
                    category=holder.category.value,
                    unit_id="U1",
                )
            )
            connection.execute(
                insert(cards).values(
                    card_no=holder.card_no,
                    application_serial=holder.application_serial,
                    cardholder_id=holder.person_id,
                    status=holder.card_status,
                    expiry=dt.date(2030, 1, 1),
                )
            )
    reference = ReferenceData(engine)
    assert reference.add_catalogue(CATALOGUE, "0" * 64, NOW_US, "test")
    assert not reference.add_catalogue(CATALOGUE, "0" * 64, NOW_US, "test")
    reference.set_policy(EXAMPLE, NOW_US, "test")
    for (person, year), categories in AUTHORISED.items():
        for category in categories:
            assert reference.authorise(person, category, year, NOW_US, "test")


def sql_service(path: Path, limits: BillLimits | None = None) -> MedicalService:
    engine = sql_world(path)
    return MedicalService(SqlMedicalStore(engine), SqlDirectory(engine), limits=limits)

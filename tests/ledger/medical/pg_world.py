"""The service tests' small world on PostgreSQL: a fresh schema per test, migrated, with the
same institutions, cardholders and reference data as `world.sql_world`."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import insert

from ledger.medical.policy import EXAMPLE
from ledger.medical.sql_reference import ReferenceData
from ledger.migrate import upgrade_postgres
from ledger.pg_bridge import PgBridge, PgEngine
from ledger.schema import cardholders, cards, institutions
from tests.ledger.medical.support import CATALOGUE
from tests.ledger.medical.world import AUTHORISED, HOLDERS, LEVELS, NOW_US
from tests.ledger.pg_support import DSN, fresh_schema


def pg_world(engine: PgEngine) -> None:
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
                    id=holder.person_id, ssn="S" + holder.person_id, name="张三",
                    category=holder.category.value, unit_id="U1",
                )
            )  # fmt: skip
            connection.execute(
                insert(cards).values(
                    card_no=holder.card_no, application_serial=holder.application_serial,
                    cardholder_id=holder.person_id, status=holder.card_status,
                    expiry=dt.date(2030, 1, 1),
                )
            )  # fmt: skip
    reference = ReferenceData(engine)  # type: ignore[arg-type]
    assert reference.add_catalogue(CATALOGUE, "0" * 64, NOW_US, "test")
    assert not reference.add_catalogue(CATALOGUE, "0" * 64, NOW_US, "test")
    reference.set_policy(EXAMPLE, NOW_US, "test")
    for (person, year), categories in AUTHORISED.items():
        for category in categories:
            assert reference.authorise(person, category, year, NOW_US, "test")


async def _migrate(schema: str) -> None:
    connection = await asyncpg.connect(DSN, server_settings={"search_path": schema})
    try:
        await upgrade_postgres(connection)
    finally:
        await connection.close()


@contextmanager
def pg_engine() -> Iterator[tuple[PgEngine, str]]:
    """(engine on the world, its URL) in a fresh schema, dropped afterwards."""
    schema_cm = fresh_schema()
    loop = asyncio.new_event_loop()
    schema = loop.run_until_complete(schema_cm.__aenter__())
    try:
        loop.run_until_complete(_migrate(schema))
        url = f"{DSN}?schema={schema}"
        bridge = PgBridge(url)
        try:
            engine = PgEngine(bridge)
            pg_world(engine)
            yield engine, url
        finally:
            bridge.close()
    finally:
        loop.run_until_complete(schema_cm.__aexit__(None, None, None))
        loop.close()

"""The service tests' small world on PostgreSQL: a fresh schema per test, migrated, with the
same institutions, cardholders and reference data as `medical_world.sql_world`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg  # type: ignore[import-untyped]

from ledger.migrate import upgrade_postgres
from ledger.pg_bridge import PgBridge, PgEngine
from tests.support.medical_world import populate
from tests.support.pg import DSN, fresh_schema


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
            populate(engine)
            yield engine, url
        finally:
            bridge.close()
    finally:
        loop.run_until_complete(schema_cm.__aexit__(None, None, None))
        loop.close()

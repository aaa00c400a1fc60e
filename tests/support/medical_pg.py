"""The service tests' small world on PostgreSQL: a fresh schema per test, migrated, with the
same institutions, cardholders and reference data as `medical_world.sql_world`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.migrate import upgrade_postgres
from ledger.pg_bridge import PgBridge
from ledger.pg_engine import PgEngine
from tests.support.medical_world import memory_service, populate, sql_service
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


BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def service_on(backend: str, tmp_path: Path) -> Iterator[MedicalService]:
    """The bill service on ``backend`` (a fixture parameter of `BACKENDS`): the memory model,
    the SQL store on SQLite, or its native writes on PostgreSQL with reference data over
    asyncpg; closed afterwards."""
    if backend == "memory":
        yield memory_service()
    elif backend == "postgres":
        with pg_engine() as (engine, _):
            store = SqlMedicalStore(engine)
            yield MedicalService(store, SqlDirectory(engine))  # type: ignore[arg-type]
            store.close()
    else:
        service = sql_service(tmp_path / "ledger.db")
        yield service
        service.store.engine.dispose()  # type: ignore[attr-defined]

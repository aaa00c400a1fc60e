"""The scenario table against SQLite and PostgreSQL, and the migrations against the schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from ledger.migrate import upgrade_sqlite
from ledger.schema import metadata
from ledger.sqlite_ledger import SqliteLedger
from tests.support.pg import pg_ledger
from tests.support.scenario_table import run_scenario


def test_scenario_table_on_sqlite(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = SqliteLedger.open(tmp_path / "ledger.db")
        try:
            await run_scenario(ledger)
        finally:
            await ledger.close()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_scenario_table_on_postgres() -> None:
    async def scenario() -> None:
        async with pg_ledger() as ledger:
            await run_scenario(ledger)

    asyncio.run(scenario())


def test_sqlite_migration_matches_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    upgrade_sqlite(path)
    upgrade_sqlite(path)  # idempotent
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_append_only_tables_refuse_changes(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ledger.db"
    upgrade_sqlite(path)
    connection = sqlite3.connect(path)
    connection.execute(
        "INSERT INTO audit_log (at_us, actor, action, subject) VALUES (1, 'op', 'x', 'y')"
    )
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("UPDATE audit_log SET actor = 'other'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM audit_log")
    connection.close()

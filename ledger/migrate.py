"""Run the Alembic migrations programmatically: on SQLite through the stdlib driver, on
PostgreSQL as offline DDL executed through asyncpg (no second PostgreSQL driver, no greenlet).

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     upgrade_sqlite(pathlib.Path(tmp) / "l.db")
...     current_sqlite(pathlib.Path(tmp) / "l.db") == head()
True
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


#: The database file, its WAL and shared-memory index: the owner's alone (cardholders, card
#: numbers, the ledger). SQLite gives the WAL and index the database file's mode.
SQLITE_FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_sqlite(path: Path | str) -> None:
    """Create the database file at `path` 0600 if it is missing, and tighten it and its WAL,
    index and journal to 0600 if they are looser (a database made before this rule)."""
    path = Path(path)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, SQLITE_FILE_MODE))
    for suffix in SQLITE_SUFFIXES:
        file = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o777 & ~SQLITE_FILE_MODE:
                file.chmod(SQLITE_FILE_MODE)


#: A new database at head, as made by the migrations once in this process (SQLite's serialized
#: image): the next new database is that image written whole, not the migrations run again.
_HEAD_IMAGE: list[bytes] = []


def upgrade_sqlite(path: Path | str, revision: str = "head") -> None:
    """Create or upgrade the SQLite database at `path` (its files 0600: `private_sqlite`).
    A new database at head is a copy of the first one this process migrated."""
    private_sqlite(path)
    wal = Path(f"{path}-wal")
    if revision == "head" and os.path.getsize(path) == 0 and not wal.exists():
        _new_at_head(Path(path))
        return
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            upgrade_connection(connection, revision)
    finally:
        engine.dispose()


def _new_at_head(path: Path) -> None:
    if not _HEAD_IMAGE:
        made = sqlite3.connect(":memory:")
        try:
            engine = create_engine("sqlite://", creator=lambda: made, poolclass=StaticPool)
            with engine.begin() as connection:
                upgrade_connection(connection)
            _HEAD_IMAGE.append(made.serialize())
        finally:
            made.close()
    image = sqlite3.connect(":memory:")
    target = sqlite3.connect(path)
    try:
        image.deserialize(_HEAD_IMAGE[0])
        image.backup(target)
    finally:
        target.close()
        image.close()


def current_sqlite(path: Path | str) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


@functools.cache  # the migrations do not change while a process runs: made once
def postgres_ddl(start: str | None, revision: str = "head") -> str:
    """The DDL that takes a PostgreSQL database from `start` (None: empty) to `revision`."""
    buffer = io.StringIO()
    config = alembic_config()
    config.attributes["dialect"] = "postgresql"
    config.attributes["buffer"] = buffer
    span = f"{start}:{revision}" if start else revision
    command.upgrade(config, span, sql=True)
    # the caller owns the transaction: drop alembic's own BEGIN/COMMIT lines
    lines = buffer.getvalue().splitlines()
    return "\n".join(line for line in lines if line.strip() not in ("BEGIN;", "COMMIT;"))


async def current_postgres(connection: asyncpg.Connection) -> str | None:
    exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    value = await connection.fetchval("SELECT version_num FROM alembic_version")
    return str(value) if value is not None else None


async def upgrade_postgres(connection: asyncpg.Connection, revision: str = "head") -> None:
    """Create or upgrade the schema the connection's search_path points at, in one transaction."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(4242)")
        start = await current_postgres(connection)
        if start == head() and revision == "head":
            return
        await connection.execute(postgres_ddl(start, revision))

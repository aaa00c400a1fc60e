"""PostgreSQL for tests: a fresh schema per ledger, dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]

from ledger.pg_ledger import PgLedger

DSN = os.environ.get("MEDSWITCH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    schema = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield schema
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


@asynccontextmanager
async def pg_ledger(**options: object) -> AsyncIterator[PgLedger]:
    async with fresh_schema() as schema:
        ledger = await PgLedger.open(DSN, schema=schema, **options)  # type: ignore[arg-type]
        try:
            yield ledger
        finally:
            await ledger.close()


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The DSN of a new database of its own (dropped afterwards): its backends can be told
    apart in ``pg_stat_activity`` by ``datname`` (see :func:`terminate_backends`)."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"{DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def terminate_backends(dsn: str) -> int:
    """Terminate every other backend connected to ``dsn``'s database (as a PostgreSQL restart
    or an operator would); how many there were."""
    name = dsn.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(DSN)
    try:
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()
    return len(killed)


async def until_waiting(holder: asyncpg.Connection) -> None:
    """Until another backend waits for a row lock that ``holder``'s transaction holds (checked
    every 25 ms, at most 10 s)."""
    waiting = (
        "SELECT count(*) FROM pg_locks AS w JOIN pg_locks AS h ON h.transactionid ="
        " w.transactionid AND h.granted WHERE NOT w.granted AND h.pid = $1"
    )
    for _ in range(400):
        if await holder.fetchval(waiting, holder.get_server_pid()):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("nothing waited for the held row")

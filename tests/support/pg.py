"""PostgreSQL for tests: a fresh schema per ledger, dropped afterwards."""

from __future__ import annotations

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

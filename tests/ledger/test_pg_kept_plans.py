"""The PostgreSQL ledger's batch with no transaction open reads and checks through functions
whose plans are kept for the session (migration 0017), and the bills' transitions folded into
its batches read and move their bills through two more (0018): one generic plan per statement,
made once. A generic plan made on small tables must not scan them (a scan kept while ``transfers``
grows is what once cost two thirds of the ledger's throughput), so each plan, made here on
empty tables, is index lookups only. The plans are read as ``auto_explain`` gives them (a
superuser's session; skipped where the test's role cannot load it)."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.pg_ledger import PgLedger
from tests.support.pg import DSN, fresh_schema

pytestmark = pytest.mark.postgres

_CALLS = (
    "SELECT * FROM ledger_batch_read(ARRAY['card:1'], ARRAY['t1'], ARRAY['P1'], ARRAY[1::bigint],"
    " ARRAY['pool:1'])",
    "SELECT ledger_batch_accounts(ARRAY['card:1', 'pool:1'], ARRAY[5, 0]::bigint[],"
    " ARRAY[0, 5]::bigint[], ARRAY[0, NULL]::bigint[], ARRAY[9, NULL]::bigint[],"
    " ARRAY['card:2'], ARRAY[1::bigint], ARRAY[2::bigint], ARRAY[false], 2, 0)",
    "SELECT ledger_batch_inserts(ARRAY['t1'], ARRAY['card:1'], ARRAY['pool:1'],"
    " ARRAY[5::bigint], ARRAY[1], ARRAY[''], ARRAY[0::smallint], ARRAY[1::bigint],"
    " ARRAY['P1'], ARRAY[1::bigint], ARRAY['T1'], ARRAY[1], ARRAY['A1'], ARRAY['01'],"
    " ARRAY[5::bigint], ARRAY['TAC'], ARRAY['20261208000000'], ARRAY['t1'], ARRAY[1], 1, 1)",
)
_INNER_STATEMENTS = 4 + 2 + 2  # the reads; the lock and the update; the two inserts
_FOLD_CALLS = (
    "SELECT medical_bills_read(ARRAY['B1', 'B2']::varchar[])",
    "SELECT medical_bills_move(ARRAY['B1']::varchar[], ARRAY['open']::varchar[],"
    " ARRAY['approved']::varchar[], ARRAY[1::bigint], ARRAY[0], ARRAY[true],"
    " ARRAY['P1']::varchar[], ARRAY[2026])",
)
_FOLD_INNER = 1 + 2  # the read; the people's locks and the moves (their accumulators in it)


async def _plans(schema: str, calls: tuple[str, ...]) -> list[str]:
    """The plans of the statements the batch's functions run (not of the calls themselves),
    made on empty tables."""
    connection = await asyncpg.connect(DSN, server_settings={"search_path": schema})
    logged: list[str] = []
    connection.add_log_listener(lambda _, message: logged.append(message.message))
    try:
        try:
            await connection.execute("LOAD 'auto_explain'")
        except asyncpg.InsufficientPrivilegeError:
            pytest.skip("auto_explain needs a superuser's session")
        await connection.execute(
            "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
            " SET auto_explain.log_level = notice"
        )
        transaction = connection.transaction()
        await transaction.start()
        try:
            for call in calls:
                await connection.fetch(call)
        finally:
            await transaction.rollback()  # nothing written
    finally:
        await connection.close()
    texts = [m.split("Query Text:", 1)[1] for m in logged if "Query Text:" in m]
    made = [text for text in texts if text.split("\n", 1)[0].strip() in calls]  # their own
    assert len(made) == len(calls), texts
    return [text for text in texts if "unnest(p_" in text or "ANY(p_" in text]


def _plans_on_empty_tables(calls: tuple[str, ...]) -> list[str]:
    """The inner statements' plans of ``calls``, made in a new schema at head, tables empty."""

    async def main() -> list[str]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            await ledger.close()
            return await _plans(schema, calls)

    return asyncio.run(main())


def test_the_batch_functions_plans_are_index_lookups_on_empty_tables() -> None:
    inner = _plans_on_empty_tables(_CALLS)
    assert len(inner) == _INNER_STATEMENTS, inner
    assert not [p for p in inner if "Seq Scan" in p], inner
    lookups = [p for p in inner if "Index Scan" in p]
    assert len(lookups) == 4 + 2, inner  # every read, the lock and the update: by the index


def test_the_bills_fold_functions_plans_are_index_lookups_on_empty_tables() -> None:
    inner = _plans_on_empty_tables(_FOLD_CALLS)
    assert len(inner) == _FOLD_INNER, inner
    assert not [p for p in inner if "Seq Scan" in p], inner
    by_key = [p for p in inner if "pk_medical_bills" in p and "ix_medical_bills" not in p]
    assert len(by_key) == 2, inner  # the read and the moves: by the bills' key, not their state

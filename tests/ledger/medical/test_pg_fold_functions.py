"""The bills' fold's functions (migration 0018), called as the ledger's batch calls them:
``medical_bills_read`` returns the bills with the columns the store's decoder reads, and
``medical_bills_move`` moves the batch's bills only from the states they were decided on —
one bill moved meanwhile and nothing of the batch's moves is kept (the batch's write fails) —
each person's accumulators by the sum of the moves' effects."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.medical.sql_writes import BILL_COLUMNS
from ledger.pg_ledger import PgLedger
from tests.support.pg import DSN, fresh_schema

pytestmark = pytest.mark.postgres

_BILL = (
    "INSERT INTO medical_bills (bill_id, institution_id, his_bill_no, card_no, person_id, year,"
    " service_date, request_digest, bill_json, split_json, state, d_eligible_fen,"
    " d_deductible_fen, d_pooled_fen, d_personal_account_fen, d_self_pay_fen, created_at_us,"
    " expires_at_us, updated_at_us) VALUES ($1, 'H1', $1, 'C1', $2, 2026, $3, 'd', '{}', '{}',"
    " $4, 100, 10, 60, 20, 10, 1, 9, 1)"
)
_MOVE = (
    "SELECT medical_bills_move($1::varchar[], $2::varchar[], $3::varchar[], $4::bigint[],"
    " $5::int[], $6::boolean[], $7::varchar[], $8::int[])"
)
_STATES = "SELECT bill_id, state, updated_at_us FROM medical_bills ORDER BY bill_id"
_TOTALS = "SELECT person_id, eligible_fen, self_pay_fen FROM medical_accumulators ORDER BY 1"


def _moves(*moves: tuple[str, str, str, int]) -> list[list[object]]:
    """The function's columns (bill, from, to, sign; at, lock, person, year), one person's."""
    return [
        [m[0] for m in moves],
        [m[1] for m in moves],
        [m[2] for m in moves],
        [7 for _ in moves],
        [m[3] for m in moves],
        [m[3] != 0 for m in moves],
        ["P1" for _ in moves],
        [2026 for _ in moves],
    ]


async def _in_schema(schema: str) -> asyncpg.Connection:
    ledger = await PgLedger.open(DSN, schema=schema)
    await ledger.close()
    return await asyncpg.connect(DSN, server_settings={"search_path": schema})


def test_the_read_returns_the_decoders_columns() -> None:
    async def main() -> tuple[list[str], list[object]]:
        async with fresh_schema() as schema:
            connection = await _in_schema(schema)
            try:
                await connection.execute(_BILL, "B1", "P1", dt.date(2026, 1, 2), "open")
                names = await connection.fetchval(
                    "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute"
                    " WHERE attrelid = 'medical_bill_row'::regclass AND attnum > 0"
                )
                found = await connection.fetchval(
                    "SELECT medical_bills_read($1::varchar[])", ["B1", "B9"]
                )
            finally:
                await connection.close()
            return names, list(found)

    names, found = asyncio.run(main())
    assert names == [c.strip() for c in BILL_COLUMNS.split(",")]
    (row,) = found
    assert (row[0], row[4], row[6], row[10]) == ("B1", "P1", dt.date(2026, 1, 2), "open")


def test_the_moves_apply_only_from_the_decided_states() -> None:
    async def main() -> list[object]:
        async with fresh_schema() as schema:
            connection = await _in_schema(schema)
            try:
                for bill, state in (("B1", "approved"), ("B2", "approved"), ("B3", "open")):
                    await connection.execute(_BILL, bill, "P1", dt.date(2026, 1, 2), state)
                seen: list[object] = []
                rollback = connection.transaction()  # as the batch's failed write: nothing kept
                await rollback.start()
                stale = _moves(
                    ("B1", "approved", "completed", 1), ("B3", "approved", "completed", 1)
                )
                seen.append(await connection.fetchval(_MOVE, *stale))  # B3 is open
                await rollback.rollback()
                fresh = _moves(
                    ("B1", "approved", "completed", 1),
                    ("B2", "approved", "completed", 1),
                    ("B3", "open", "approved", 0),
                )
                seen.append(await connection.fetchval(_MOVE, *fresh))
                seen.append([tuple(r) for r in await connection.fetch(_STATES)])
                seen.append([tuple(r) for r in await connection.fetch(_TOTALS)])
            finally:
                await connection.close()
            return seen

    stale, fresh, states, totals = asyncio.run(main())
    assert stale is False  # not moved from a state it was not decided on
    assert fresh is True
    assert states == [("B1", "completed", 7), ("B2", "completed", 7), ("B3", "approved", 7)]
    assert totals == [("P1", 200, 20)]  # the two commits' deltas, added once

"""Crash safety: SIGKILL a writer mid-stream; every acknowledged transfer survives, none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.core import Transfer
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.support.invariants import check_invariants
from tests.support.pg import DSN, fresh_schema

ACKS_BEFORE_KILL = 400
TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parents[2]


def _stream_until_killed(ledger_args: list[str]) -> dict[str, int]:
    """Start the writer, read acknowledgements until enough arrived, then SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.crash_writer", *ledger_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: dict[str, int] = {}
    deadline = time.monotonic() + TIMEOUT_S
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            transfer, amount = line.split()
            acked[transfer] = int(amount)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL, "the writer finished before the kill"
    assert len(acked) >= ACKS_BEFORE_KILL
    return acked


def _all_transfers(db: Path) -> list[Transfer]:
    connection = sqlite3.connect(db)
    try:
        found = connection.execute(
            "SELECT id, debit_account_id, credit_account_id, amount_fen, code, reference"
            " FROM transfers WHERE result = 0"
        ).fetchall()
    finally:
        connection.close()
    return [Transfer(*row) for row in found]


def test_acknowledged_transfers_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    acked = _stream_until_killed(["sqlite", str(db)])

    async def check() -> None:
        ledger = SqliteLedger.open(db)
        try:
            found = await ledger.lookup_transfers(sorted(acked))
            assert set(found) == set(acked)
            assert all(found[t].transfer.amount_fen == a for t, a in acked.items())
            every = _all_transfers(db)
            ids = [t.id for t in every]
            assert len(ids) == len(set(ids))  # none doubled
            assert set(acked) <= set(ids)  # maybe more: committed, not yet acknowledged
            await check_invariants(ledger, every)
        finally:
            await ledger.close()

    asyncio.run(check())


@pytest.mark.postgres
def test_acknowledged_transfers_survive_sigkill_on_postgres() -> None:
    async def check(schema: str) -> None:
        acked = await asyncio.to_thread(_stream_until_killed, ["postgres", DSN, schema])
        ledger = await PgLedger.open(DSN, schema=schema, migrate=False)
        try:
            found = await ledger.lookup_transfers(sorted(acked))
            assert set(found) == set(acked)
            balance = await ledger.balance("payins:h1")
            assert balance is not None
            connection = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                total = await connection.fetchval("SELECT sum(amount_fen) FROM transfers")
            finally:
                await connection.close()
            assert balance.credits_posted_fen == total >= sum(acked.values())
        finally:
            await ledger.close()

    async def go() -> None:
        async with fresh_schema() as schema:
            await check(schema)

    asyncio.run(go())

"""Offline records on file: once per (PSAM terminal number, serial), a verified record replacing
an unverified one, read back by terminal and batch — the same on every ledger."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.core import Ledger, OfflineRecord
from ledger.memory import MemoryLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.ledger.pg_support import pg_ledger

GENUINE = OfflineRecord(
    "000000000001", 7, "P0000001", 3, "3100000000000001", "ED", 2_500, "a1b2c3d4",
    "20261125101500", "t" * 32,
)  # fmt: skip


async def scenario(ledger: Ledger) -> None:
    forged = replace(GENUINE, psam_serial=8, tac="00000000", transfer_id=None)
    other_batch = replace(GENUINE, psam_serial=9, batch_no=4)
    assert await ledger.record_offline([GENUINE, forged, other_batch]) == [True, True, True]
    assert await ledger.record_offline([GENUINE, forged]) == [False, False]  # twice: nothing
    genuine_8 = replace(GENUINE, psam_serial=8, transfer_id="u" * 32)
    assert await ledger.record_offline([genuine_8, forged]) == [True, False]  # verified wins
    held = await ledger.offline_records("P0000001", 3)
    assert held == [GENUINE, genuine_8]
    assert await ledger.offline_records("P0000001", 4) == [other_batch]
    assert await ledger.offline_records("P0000002", 3) == []


def test_offline_records_in_memory() -> None:
    asyncio.run(scenario(MemoryLedger()))


def test_offline_records_on_sqlite(tmp_path: Path) -> None:
    async def run() -> None:
        ledger = SqliteLedger.open(tmp_path / "ledger.db")
        try:
            await scenario(ledger)
        finally:
            await ledger.close()

    asyncio.run(run())


@pytest.mark.postgres
def test_offline_records_on_postgres() -> None:
    async def run() -> None:
        async with pg_ledger() as ledger:
            await scenario(ledger)

    asyncio.run(run())

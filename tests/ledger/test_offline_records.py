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
from tests.support.pg import pg_ledger

GENUINE = OfflineRecord(
    "000000000001", 7, "P0000001", 3, "3100000000000001", "ED", 2_500, "a1b2c3d4",
    "20261125101500", "t" * 32, 4,
)  # fmt: skip


async def scenario(ledger: Ledger) -> None:
    forged = replace(GENUINE, psam_serial=8, tac="00000000", transfer_id=None)
    other_batch = replace(GENUINE, psam_serial=9, batch_no=4)
    assert await ledger.record_offline([GENUINE, forged, other_batch]) == [True, True, True]
    assert await ledger.record_offline([GENUINE, forged]) == [False, False]  # twice: nothing
    genuine_8 = replace(GENUINE, psam_serial=8, transfer_id="u" * 32)  # counter 4 too
    assert await ledger.record_offline([genuine_8, forged]) == [True, False]  # verified wins
    held = await ledger.offline_records("P0000001", 3)
    assert held == [GENUINE, genuine_8]
    assert await ledger.offline_records("P0000001", 4) == [other_batch]
    assert await ledger.offline_records("P0000002", 3) == []

    # Sent again by its terminal in a later batch (after a new sign-on): it moves there; never
    # from another terminal, never a verified record replaced by an unverified one.
    later = replace(GENUINE, batch_no=5)
    assert await ledger.record_offline([later, replace(genuine_8, terminal_id="P0000002")]) == [
        False,
        False,
    ]
    assert await ledger.record_offline([replace(genuine_8, batch_no=5, transfer_id=None)]) == [
        False
    ]
    assert await ledger.offline_records("P0000001", 5) == [later]
    assert await ledger.offline_records("P0000001", 3) == [genuine_8]

    # Written twice in one call (a forgery, then the genuine record): kept once, with the
    # genuine record's data, where the first was put (before a record sent after both).
    forged_12 = replace(forged, psam_serial=12, batch_no=6)
    genuine_12 = replace(GENUINE, psam_serial=12, batch_no=6, transfer_id="v" * 32)
    after = replace(GENUINE, psam_serial=13, batch_no=6)
    assert await ledger.record_offline([forged_12, after, genuine_12]) == [True, True, True]
    assert await ledger.offline_records("P0000001", 6) == [genuine_12, after]

    # The card's counters: verified records with a counter, by counter.
    counted = replace(GENUINE, psam_serial=10, card_counter=2, card_datetime="20261125090000")
    await ledger.record_offline([counted, replace(forged, psam_serial=11, card_counter=3)])
    card = ("3100000000000001", "ED")
    assert await ledger.offline_counters([card, ("31", "EP")]) == {
        card: [(2, "20261125090000"), *[(4, "20261125101500")] * 5],  # serials 7-9, 12, 13
        ("31", "EP"): [],
    }


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

"""Statement import at the library level (ledger/dayend/recon_statement.py): a crash after a line
posted and before it was recorded is repaired by importing the same file again (matched, not
reviewed, posted once); lines that owe more than expected, name no unit, or come from another
bank go to review; a statement under another key is refused before anything is read."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend.recon_statement import import_statement
from ledger.demo import init_demo
from ledger.events import ContributionLine, StatementLine, post_contribution
from ledger.events.funds import post_contribution_received
from ledger.medical.sql_store import sqlite_engine
from ledger.sqlite_ledger import SqliteLedger
from tests.support.daemon import new_hsm, now
from tests.support.dayend import CUTOVER
from tests.support.personal import demo_keys

NOW_US = CUTOVER.instant_us(dt.date(2026, 11, 27)) - 60_000_000  # business date 2026-11-27
ENTRIES = (
    bs.StatementEntry("R1", bs.CONTRIBUTION, bs.CREDIT, 6_000, "u2", "first half"),
    bs.StatementEntry("R2", bs.CONTRIBUTION, bs.CREDIT, 4_000, "u2", "second half"),
    bs.StatementEntry("R3", bs.CONTRIBUTION, bs.CREDIT, 1, "u2", "one fen too many"),
    bs.StatementEntry("R4", bs.CONTRIBUTION, bs.CREDIT, 5, "h1", "not a unit"),
    bs.StatementEntry("R5", bs.SAVINGS_DEBITS, bs.CREDIT, 5, "b1", "on the wrong account"),
)


def test_crash_repair_and_unmatched_lines(tmp_path: Path) -> None:
    db = tmp_path / "medswitch.db"
    init_demo(db, 3, personal=demo_keys(db.parent))
    asyncio.run(_scenario(db))


async def _scenario(db: Path) -> None:
    hsm = new_hsm(MemoryKeyStore())
    key = await hsm.generate_key("bank/b1/FILE", KeyUsage.FILE, now=now())
    other = await hsm.generate_key("bank/b2/FILE", KeyUsage.FILE, now=now())
    statement = bs.Statement("b1", "2026-11-26", bs.FUND, "S1", ENTRIES)
    data = await bf.seal(hsm, key, bs.render_statement(statement))
    engine = sqlite_engine(db)
    ledger = SqliteLedger.open(db)
    try:
        line = ContributionLine("u2", "2026-11", "0000000001", 3_000, 7_000)
        assert (await post_contribution(ledger, line)).ok
        # the first line posted by an import that crashed before recording it
        crashed = StatementLine("b1:R1", 0, "u2", 6_000)
        assert (await post_contribution_received(ledger, crashed)).ok
        with pytest.raises(bf.BankFileError, match="MAC"):
            await import_statement(
                engine, ledger, hsm, other, data, "carol", NOW_US + 1, cutover=CUTOVER
            )
        done = await import_statement(
            engine, ledger, hsm, key, data, "carol", NOW_US + 1, cutover=CUTOVER
        )
        assert [(x.entry.line_ref, x.status) for x in done.lines] == [
            ("R1", "matched"),
            ("R2", "matched"),
            ("R3", "review"),
            ("R4", "review"),
            ("R5", "review"),
        ]
        assert [x.why for x in done.lines[2:]] == [
            "more than the unit's contributions owed",
            "h1 is no employer unit",
            "SAVINGS_DEBITS/C on FUND: unexpected",
        ]
        owed = await ledger.balance("contrib:u2")
        assert owed is not None and owed.balance_fen == 0  # 6000 once, then 4000
        reviews = [r for r in await ledger.reviews() if r.reason == "bank_unmatched"]
        assert sorted(r.amount_fen for r in reviews) == [1, 5, 5]
        again = await import_statement(
            engine, ledger, hsm, key, data, "carol", NOW_US + 2, cutover=CUTOVER
        )
        assert again.count("already") == 5
    finally:
        await ledger.close()
        engine.dispose()


def test_a_reference_reused_for_another_line_goes_to_review(tmp_path: Path) -> None:
    """The same reference with the same content is a repeat; with other content (a genuinely
    owed contribution) it is neither dropped as `already` nor posted: it goes to review."""
    db = tmp_path / "medswitch.db"
    init_demo(db, 3, personal=demo_keys(db.parent))
    asyncio.run(_reused(db))


async def _reused(db: Path) -> None:
    hsm = new_hsm(MemoryKeyStore())
    key = await hsm.generate_key("bank/b1/FILE", KeyUsage.FILE, now=now())
    first = bs.StatementEntry("R1", bs.CONTRIBUTION, bs.CREDIT, 6_000, "u2", "first half")
    later = bs.StatementEntry("R1", bs.CONTRIBUTION, bs.CREDIT, 4_000, "u2", "second half")
    day1 = bs.Statement("b1", "2026-11-26", bs.FUND, "S1", (first,))
    day2 = bs.Statement("b1", "2026-11-27", bs.FUND, "S2", (later,))
    engine = sqlite_engine(db)
    ledger = SqliteLedger.open(db)
    try:
        line = ContributionLine("u2", "2026-11", "0000000001", 3_000, 7_000)
        assert (await post_contribution(ledger, line)).ok
        data1 = await bf.seal(hsm, key, bs.render_statement(day1))
        data2 = await bf.seal(hsm, key, bs.render_statement(day2))
        assert (
            await import_statement(
                engine, ledger, hsm, key, data1, "carol", NOW_US + 1, cutover=CUTOVER
            )
        ).count("matched") == 1
        assert (
            await import_statement(
                engine, ledger, hsm, key, data1, "carol", NOW_US + 2, cutover=CUTOVER
            )
        ).count("already") == 1
        done = await import_statement(
            engine, ledger, hsm, key, data2, "carol", NOW_US + 3, cutover=CUTOVER
        )
        assert [x.status for x in done.lines] == ["conflict"]
        assert "R1 is on record for another line (2026-11-26" in done.lines[0].why
        owed = await ledger.balance("contrib:u2")
        assert owed is not None and owed.balance_fen == 4_000  # nothing posted for the conflict
        reviews = [r for r in await ledger.reviews() if r.reason == "bank_unmatched"]
        assert [(r.amount_fen, "2026-11-27" in r.reference) for r in reviews] == [(4_000, True)]
        again = await import_statement(
            engine, ledger, hsm, key, data2, "carol", NOW_US + 4, cutover=CUTOVER
        )
        assert [x.status for x in again.lines] == ["conflict"]  # still not dropped
        assert len([r for r in await ledger.reviews() if r.reason == "bank_unmatched"]) == 1
    finally:
        await ledger.close()
        engine.dispose()

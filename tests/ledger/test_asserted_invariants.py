"""The invariants asserted where the ledger's state changes (not only checked by tests): an
amount out of range or a never-negative account below zero never reaches the totals, a negative
posted total is never loaded, and a multi-row write that writes fewer rows than it was given
rolls its batch back. Each drives the state past the checks that normally refuse it first."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from ledger.core import AMOUNT_FEN_MAX, Health, Transfer, new_account
from ledger.kinds import AccountKind as K
from ledger.memory import MemoryLedger
from ledger.sql_rows import account_state
from ledger.sqlite_ledger import SqliteLedger
from ledger.state import AccountState, Batch
from ledger.writer.store import write_values

SOURCE = new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1")
PERSONAL = new_account(K.PERSONAL_FUND, "c1")  # never negative by default


def _batch() -> Batch:
    return Batch({a.id: AccountState.opened(a) for a in (SOURCE, PERSONAL)}, {})


def test_an_amount_out_of_range_never_reaches_the_totals() -> None:
    for amount_fen in (0, -1, AMOUNT_FEN_MAX + 1):
        with pytest.raises(AssertionError, match="out of range"):
            _batch()._apply(Transfer("t", SOURCE.id, PERSONAL.id, amount_fen, 1))


def test_a_never_negative_account_never_goes_below_zero() -> None:
    batch = _batch()
    batch._apply(Transfer("in", SOURCE.id, PERSONAL.id, 5, 1))
    batch._apply(Transfer("out", PERSONAL.id, SOURCE.id, 5, 1))  # to zero: allowed
    with pytest.raises(AssertionError, match="below zero"):
        batch._apply(Transfer("over", PERSONAL.id, SOURCE.id, 1, 1))


def test_a_negative_posted_total_is_never_loaded() -> None:
    row = (PERSONAL.id, PERSONAL.kind.value, "c1", int(PERSONAL.flags), 0, 0, False)
    assert account_state(row).credits_posted_fen == 0
    for broken in ((*row[:4], -1, 0, False), (*row[:4], 0, -1, False)):
        with pytest.raises(AssertionError, match="negative posted total"):
            account_state(broken)


def test_a_write_of_fewer_rows_than_given_fails(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    db.execute("CREATE TABLE t (x PRIMARY KEY)")
    write_values(db, "INSERT INTO t (x) VALUES {values}", [(1,), (2,)])
    with pytest.raises(AssertionError, match="1 rows written of 2"):
        write_values(db, "INSERT OR IGNORE INTO t (x) VALUES {values}", [(2,), (3,)])
    db.close()


def test_health_is_asked_of_the_ledger(tmp_path: Path) -> None:
    """Every ledger answers `health()`: OK while it takes writes; a closed SQLite writer
    thread, WRITER_ENDED."""

    async def go() -> None:
        assert MemoryLedger().health() is Health.OK
        ledger = SqliteLedger.open(tmp_path / "l.db")
        assert ledger.health() is Health.OK
        await ledger.close()
        assert ledger.health() is Health.WRITER_ENDED

    asyncio.run(go())

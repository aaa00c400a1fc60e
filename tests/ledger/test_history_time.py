"""`history` gives each posting's commit time (posted_at_us), on SQLite and PostgreSQL: the
kiosk's history inquiry prints it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ledger.core import Ledger, Transfer, new_account, transfer_id
from ledger.kinds import AccountKind
from ledger.sqlite_ledger import SqliteLedger
from tests.support.pg import pg_ledger


async def posted_then_listed(ledger: Ledger) -> None:
    fund = new_account(AccountKind.CONTRIBUTIONS_RECEIVABLE, "u1")
    personal = new_account(AccountKind.PERSONAL_FUND, "p1")
    await ledger.open_accounts([fund, personal])
    before_us = time.time_ns() // 1000
    transfer = Transfer(transfer_id("history", 1), fund.id, personal.id, 500, 101)
    assert [r.name for r in await ledger.post([transfer])] == ["CREATED"]
    after_us = time.time_ns() // 1000
    [posted] = await ledger.history(personal.id, 10)
    assert posted.transfer == transfer
    assert posted.posted_at_us is not None
    assert before_us - 1_000_000 <= posted.posted_at_us <= after_us + 1_000_000


def test_sqlite_history_has_the_commit_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = SqliteLedger.open(tmp_path / "ledger.db")
        try:
            await posted_then_listed(ledger)
        finally:
            await ledger.close()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_postgres_history_has_the_commit_time() -> None:
    async def scenario() -> None:
        async with pg_ledger() as ledger:
            await posted_then_listed(ledger)

    asyncio.run(scenario())

"""50 concurrent writers against one never-negative personal fund: it never goes below zero, and
the results are those of posting the same transfers one by one in commit order (serialisable)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import Ledger, Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.memory import MemoryLedger
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.support.invariants import check_invariants
from tests.support.pg import DSN, fresh_schema

WRITERS = 50
FUNDED_FEN = 20_000
ACCOUNTS = [
    new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1"),
    new_account(K.PERSONAL_FUND, "c1"),
    new_account(K.ED_LOADS_IN_DOUBT, "k1"),
]
FUNDING = Transfer("fund", "contrib:u1", "pf:c1", FUNDED_FEN, code=1)

amounts = st.lists(st.integers(1, 1_500), min_size=WRITERS, max_size=WRITERS)


def _loads(amounts_fen: Sequence[int]) -> list[Transfer]:
    return [
        Transfer(f"load-{i}", "pf:c1", "edload:k1", a, code=3) for i, a in enumerate(amounts_fen)
    ]


async def _race(ledgers: Sequence[Ledger], amounts_fen: Sequence[int]) -> None:
    first = ledgers[0]
    await first.open_accounts(ACCOUNTS)
    assert await first.post([FUNDING]) == [TransferResult.CREATED]
    loads = _loads(amounts_fen)

    async def writer(index: int) -> TransferResult:
        ledger = ledgers[index % len(ledgers)]
        await asyncio.sleep(0)
        return await ledger.transfer(loads[index])

    results = await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    assert set(results) <= {TransferResult.CREATED, TransferResult.INSUFFICIENT_FUNDS}
    pf = await first.balance("pf:c1")
    assert pf is not None and pf.balance_fen >= 0
    found = await first.lookup_transfers([t.id for t in loads])
    in_commit_order = sorted(found.values(), key=lambda p: p.seq)
    created = [p.transfer for p in in_commit_order if p.result is TransferResult.CREATED]
    assert pf.balance_fen == FUNDED_FEN - sum(t.amount_fen for t in created)
    await check_invariants(first, [FUNDING, *created])
    model = MemoryLedger()
    await model.open_accounts(ACCOUNTS)
    await model.post([FUNDING])
    by_id = {load.id: results[i] for i, load in enumerate(loads)}
    for posted in in_commit_order:
        assert await model.post([posted.transfer]) == [by_id[posted.transfer.id]]


@settings(max_examples=8)
@given(amounts)
def test_fifty_writers_on_sqlite(amounts_fen: list[int]) -> None:
    async def race(path: Path) -> None:
        ledger = SqliteLedger.open(path)
        try:
            await _race([ledger], amounts_fen)
        finally:
            await ledger.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(race(Path(directory) / "ledger.db"))


@pytest.mark.postgres
@settings(max_examples=4)
@given(amounts)
def test_fifty_writers_on_postgres_two_ledgers(amounts_fen: list[int]) -> None:
    """Two ledgers (as two processes would) with two writer connections each on one schema."""

    async def race() -> None:
        async with fresh_schema() as schema:
            one = await PgLedger.open(DSN, schema=schema, writers=2)
            two = await PgLedger.open(DSN, schema=schema, writers=2, migrate=False)
            try:
                await _race([one, two], amounts_fen)
            finally:
                await one.close()
                await two.close()

    asyncio.run(race())

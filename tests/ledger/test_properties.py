"""Hypothesis: random transfer sequences on the model (and the SQL ledgers against the model)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings

from ledger.core import Ledger, Transfer, TransferResult
from ledger.kinds import ALLOWED_PAIRS, side_of
from ledger.memory import MemoryLedger
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from tests.support import ledger_strategies as strategies
from tests.support.invariants import check_invariants, posted_transfers
from tests.support.pg import pg_ledger

Steps = Sequence[tuple[Sequence[Transfer], bool]]


async def _run(ledger: Ledger, steps: Steps) -> list[list[TransferResult]]:
    await ledger.open_accounts(strategies.ACCOUNTS)
    results = []
    for batch, linked in steps:
        results.append(await ledger.post(batch, linked=linked))
    return results


async def _replay_changes_nothing(ledger: Ledger, steps: Steps) -> None:
    """Every id the ledger remembers, replayed with its first data, returns its first result
    (EXISTS for a posted one) and moves nothing."""
    before = await ledger.all_balances()
    first = await ledger.lookup_transfers(strategies.IDS)
    for posted in first.values():
        again = await ledger.post([posted.transfer])
        expected = TransferResult.EXISTS if posted.result.ok else posted.result
        assert again == [expected]
    assert await ledger.all_balances() == before


async def _model_run(steps: Steps) -> tuple[list[list[TransferResult]], MemoryLedger]:
    model = MemoryLedger()
    return await _run(model, steps), model


def test_every_allowed_pair_stays_on_one_side() -> None:
    for debit, credit in ALLOWED_PAIRS:
        assert side_of(debit) is side_of(credit), (debit, credit)


@given(strategies.steps)
def test_model_invariants(steps: Steps) -> None:
    async def check() -> None:
        _, model = await _model_run(steps)
        await check_invariants(model, await posted_transfers(model, strategies.IDS))
        await _replay_changes_nothing(model, steps)

    asyncio.run(check())


@pytest.fixture(scope="module")
def template_db() -> object:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "template.db"
        upgrade_sqlite(path)
        yield path


@settings(max_examples=25)
@given(steps=strategies.steps)
def test_sqlite_matches_the_model(steps: Steps, template_db: Path) -> None:
    async def check(path: Path) -> None:
        expected, model = await _model_run(steps)
        ledger = SqliteLedger.open(path, migrate=False)
        try:
            assert await _run(ledger, steps) == expected
            assert await ledger.all_balances() == sorted(
                await model.all_balances(), key=lambda b: b.account_id
            )
            await check_invariants(ledger, await posted_transfers(ledger, strategies.IDS))
            await _replay_changes_nothing(ledger, steps)
        finally:
            await ledger.close()

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        shutil.copy(template_db, path)
        asyncio.run(check(path))


@pytest.mark.postgres
@settings(max_examples=10)
@given(steps=strategies.steps)
def test_postgres_matches_the_model(steps: Steps) -> None:
    async def check() -> None:
        expected, model = await _model_run(steps)
        async with pg_ledger() as ledger:
            assert await _run(ledger, steps) == expected
            assert await ledger.all_balances() == sorted(
                await model.all_balances(), key=lambda b: b.account_id
            )
            await _replay_changes_nothing(ledger, steps)

    asyncio.run(check())

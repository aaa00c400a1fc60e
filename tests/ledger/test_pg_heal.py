"""The PostgreSQL ledger heals a lost connection: its backends terminated mid-traffic (as a
restart or an operator would), the writes in flight fail with LedgerUnavailable (answered 96,
outcome unknown), later ones succeed again on a new connection, and nothing answered as posted
is lost or doubled: retried by id, the ledger ends equal to the in-memory model."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.core import Health, LedgerUnavailable, Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.memory import MemoryLedger
from ledger.pg_ledger import PgLedger
from tests.support.invariants import check_invariants
from tests.support.pg import DSN, fresh_database, terminate_backends

pytestmark = pytest.mark.postgres

CARDHOLDERS = 5
ACCOUNTS = [
    new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1"),
    *(new_account(K.PERSONAL_FUND, f"c{i}") for i in range(CARDHOLDERS)),
]
WAVES = 8
PER_WAVE = 40
KILL_AT = (2, 5)  # the waves during which every backend is terminated
RETRY_ROUNDS = 50  # a bounded wait for the ledger to come back
RETRY_PAUSE_S = 0.05


def _transfer(number: int) -> Transfer:
    return Transfer(f"t-{number}", "contrib:u1", f"pf:c{number % CARDHOLDERS}", number + 1, code=1)


async def _post(ledger: PgLedger, transfer: Transfer) -> TransferResult | None:
    """The result, or None for LedgerUnavailable (the only failure allowed)."""
    try:
        return await ledger.transfer(transfer)
    except LedgerUnavailable:
        return None


async def _retried(ledger: PgLedger, transfer: Transfer) -> TransferResult:
    for _ in range(RETRY_ROUNDS):
        result = await _post(ledger, transfer)
        if result is not None:
            return result
        await asyncio.sleep(RETRY_PAUSE_S)
    raise AssertionError(f"{transfer.id} still unavailable")


async def _traffic(dsn: str) -> None:
    ledger = await PgLedger.open(dsn)
    try:
        await ledger.open_accounts(ACCOUNTS)
        answered: dict[str, TransferResult | None] = {}
        killed = 0
        for wave in range(WAVES):
            transfers = [_transfer(wave * PER_WAVE + i) for i in range(PER_WAVE)]
            posting = [asyncio.ensure_future(_post(ledger, t)) for t in transfers]
            if wave in KILL_AT:
                await asyncio.sleep(0)  # the batch on its way to the server
                killed += await terminate_backends(dsn)
            for transfer, result in zip(transfers, await asyncio.gather(*posting), strict=True):
                answered[transfer.id] = result
        assert killed >= len(KILL_AT)  # the ledger's connection was there to be killed
        # traffic succeeds again (a ledger that does not heal fails every later write)
        after = _transfer(WAVES * PER_WAVE)
        assert await _retried(ledger, after) is TransferResult.CREATED
        assert ledger.health() is Health.OK
        # posted means durable: every 00 is in the database; a retry of a 96 posts once
        found = await ledger.lookup_transfers(list(answered))
        for transfer_id, result in answered.items():
            if result is not None:
                assert result is TransferResult.CREATED
                assert transfer_id in found
        everything = [_transfer(n) for n in range(WAVES * PER_WAVE + 1)]
        retried = await asyncio.gather(*(_retried(ledger, t) for t in everything))
        assert set(retried) <= {TransferResult.CREATED, TransferResult.EXISTS}
        posted = [t for t in everything if answered.get(t.id) is not None]
        replays = await asyncio.gather(*(ledger.transfer(t) for t in posted))
        assert set(replays) <= {TransferResult.EXISTS}  # posted once: a replay is a replay
        await check_invariants(ledger, everything)
        model = MemoryLedger()
        await model.open_accounts(ACCOUNTS)
        await model.post(everything)
        assert {b.account_id: b.balance_fen for b in await ledger.all_balances()} == {
            b.account_id: b.balance_fen for b in await model.all_balances()
        }
    finally:
        await ledger.close()


def test_terminated_backends_are_reconnected_and_nothing_is_lost_or_doubled() -> None:
    async def main() -> None:
        async with fresh_database() as dsn:
            await asyncio.wait_for(_traffic(dsn), timeout=120)

    asyncio.run(main())


async def _ledger_backends(dsn: str) -> int:
    admin = await asyncpg.connect(DSN)
    try:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND application_name = 'medswitch-ledger'",
            dsn.rsplit("/", 1)[1],
        )
    finally:
        await admin.close()
    return int(count)


def test_an_idle_ledger_connects_again_without_traffic() -> None:
    """Readiness reports a lost connection (so a balancer may send nothing): the writer must
    not wait for a request to connect again."""

    async def main() -> None:
        async with fresh_database() as dsn:
            ledger = await PgLedger.open(dsn)
            try:
                await ledger.open_accounts(ACCOUNTS)
                assert await _ledger_backends(dsn) == 1
                assert await terminate_backends(dsn) >= 1
                for _ in range(RETRY_ROUNDS * 4):  # bounded: the writer looks every WATCH_S
                    await asyncio.sleep(RETRY_PAUSE_S)
                    if ledger.health() is Health.OK and await _ledger_backends(dsn) == 1:
                        break
                else:
                    raise AssertionError("the idle ledger did not connect again")
                assert await _retried(ledger, _transfer(0)) is TransferResult.CREATED
            finally:
                await ledger.close()

    asyncio.run(main())

"""The PostgreSQL ledger's shared accounts (the pooled fund, the payables: the hot rows) are read
without a lock and moved by each batch's net delta in its write: several writers crediting one
payable at once add up exactly, a card's account is still locked while its batch decides, and
a shared account closed between a batch's read and its write makes the batch run again (the
transfer then refused), never a posting to a closed account."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger import events as ev
from ledger.core import Transfer, TransferResult
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id, is_shared
from ledger.pg_ledger import PgLedger
from tests.support.pg import DSN, fresh_schema, until_waiting

pytestmark = pytest.mark.postgres

SHADOWS = [account_id(K.CARD_ED_SHADOW, f"C{n}") for n in range(4)]
PAYABLE = account_id(K.INSTITUTION_PAYABLE_INSURANCE, "H001")


async def _open(ledger: PgLedger) -> None:
    accounts = ev.institution_accounts("H001")
    for n in range(4):
        accounts += ev.card_accounts(f"C{n}")
    await ledger.open_accounts(accounts)


def test_the_hot_rows_are_the_shared_kinds() -> None:
    assert is_shared(PAYABLE) and is_shared(account_id(K.POOLED_FUND, ev.CENTRE))
    assert not any(is_shared(a) for a in SHADOWS)
    assert not is_shared(account_id(K.PERSONAL_FUND, "P1"))


def test_writers_crediting_one_payable_at_once_add_up() -> None:
    async def main() -> None:
        async with fresh_schema() as schema:
            ledgers = [await PgLedger.open(DSN, schema=schema, writers=2) for _ in range(2)]
            try:
                await _open(ledgers[0])
                posts = [
                    ledgers[n % 2].post([Transfer(f"d-{n}", SHADOWS[n % 4], PAYABLE, 100 + n, 1)])
                    for n in range(200)
                ]
                results = await asyncio.gather(*posts)
                assert all(r == [TransferResult.CREATED] for r in results)
                found = await ledgers[1].balances([PAYABLE, *SHADOWS])
                assert found[PAYABLE].credits_posted_fen == sum(100 + n for n in range(200))
                for k, shadow in enumerate(SHADOWS):
                    expected = sum(100 + n for n in range(200) if n % 4 == k)
                    assert found[shadow].debits_posted_fen == expected
            finally:
                for ledger in ledgers:
                    await ledger.close()

    asyncio.run(main())


def test_a_shared_account_closed_before_the_write_runs_the_batch_again() -> None:
    async def main() -> None:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                await _open(ledger)
                closing = other.transaction()
                await closing.start()
                await other.execute("UPDATE accounts SET closed = true WHERE id = $1", PAYABLE)
                debit = Transfer("d-closed", SHADOWS[0], PAYABLE, 500, 1)
                posting = asyncio.create_task(ledger.post([debit]))
                await until_waiting(other)  # the batch's write, for the payable's row
                await closing.commit()
                assert await posting == [TransferResult.CREDIT_ACCOUNT_CLOSED]
                found = await ledger.balances([PAYABLE, SHADOWS[0]])
                assert found[PAYABLE].credits_posted_fen == 0
                assert found[SHADOWS[0]].debits_posted_fen == 0
            finally:
                await other.close()
                await ledger.close()

    asyncio.run(main())


def test_a_cards_account_is_locked_while_its_batch_decides() -> None:
    """A card's shadow (the balance a review reads before the debit) is locked by the batch's
    read: a batch debiting it waits for a transaction holding it."""

    async def main() -> None:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                await _open(ledger)
                holding = other.transaction()
                await holding.start()
                await other.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", SHADOWS[1])
                posting = asyncio.create_task(
                    ledger.post([Transfer("d-wait", SHADOWS[1], PAYABLE, 5, 1)])
                )
                await until_waiting(other)
                assert not posting.done()
                await holding.rollback()
                assert await posting == [TransferResult.CREATED]
            finally:
                await other.close()
                await ledger.close()

    asyncio.run(main())

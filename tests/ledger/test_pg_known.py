"""A PostgreSQL ledger's writer reads only what it does not know (``ledger.pg_write.Known``): the
accounts its last batches with no transaction open left, the bills its process last read or
moved. A batch it knows all of is one statement, its write. What it knows is a hint the write
checks: an account another process moved, a transfer id another writer took, a bill moved
elsewhere — each fails the write (nothing of it written) and the batch runs again from a read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger import events as ev
from ledger.core import Transfer, TransferResult
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.medical.bills import BillState, BillStateError
from ledger.pg_connection import KeptAlive
from ledger.pg_engine import PgEngine
from ledger.pg_ledger import PgLedger
from tests.support.medical_pg import pg_engine
from tests.support.medical_pg_ledger import CARD, in_ledger, submitted, worker
from tests.support.medical_world import NOW
from tests.support.pg import DSN, fresh_schema

pytestmark = pytest.mark.postgres

FUND = account_id(K.PERSONAL_FUND, "P1")  # never negative
RECEIVABLE = account_id(K.CONTRIBUTIONS_RECEIVABLE, "U1")
IN_DOUBT = account_id(K.ED_LOADS_IN_DOUBT, "C1")
_FETCHROW = KeptAlive.fetchrow
_TRANSACTION = asyncpg.Connection.transaction


@asynccontextmanager
async def _reads(bills: list[list[str]] | None = None) -> AsyncIterator[list[str]]:
    """The batches' reads (``ledger_batch_read``, with none open) on the writers' connections;
    ``bills``: the bills each asks for."""
    found: list[str] = []

    async def fetchrow(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        if "ledger_batch_read" in sql:
            found.append(sql)
            if bills is not None and "medical_bills_read" in sql:
                bills.append(list(args[5]))
        return await _FETCHROW(self, sql, *args, **kwargs)

    with mock.patch.object(KeptAlive, "fetchrow", fetchrow):
        yield found


async def _funded(ledger: PgLedger, fen: int) -> None:
    accounts = ev.cardholder_accounts("P1") + ev.card_accounts("C1") + ev.unit_accounts("U1")
    await ledger.open_accounts(accounts)
    assert await ledger.post([Transfer("in", RECEIVABLE, FUND, fen, 1)]) == [TransferResult.CREATED]


def test_a_batch_on_accounts_its_writer_knows_is_its_write_alone() -> None:
    async def main() -> tuple[int, int, tuple[int, int]]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            try:
                await _funded(ledger, 100)  # the fund and the receivable known
                async with _reads() as reads:
                    first = await ledger.post([Transfer("load-1", FUND, IN_DOUBT, 30, 1)])
                    after_first = len(reads)  # the account in doubt, not known yet
                    second = await ledger.post([Transfer("load-2", FUND, IN_DOUBT, 30, 1)])
                assert first == second == [TransferResult.CREATED]
                found = (await ledger.balances([FUND]))[FUND]
                return after_first, len(reads), (found.debits_posted_fen, found.credits_posted_fen)
            finally:
                await ledger.close()

    after_first, after_second, totals = asyncio.run(main())
    assert (after_first, after_second) == (1, 1)  # the second batch: no read
    assert totals == (60, 100)


def test_an_account_another_process_moved_is_caught_by_the_write() -> None:
    """The writer knows the fund at 100; another process debits 50; a load of 80 decided on
    what the writer knew does not apply: the batch runs again in a transaction and refuses."""

    async def main() -> tuple[list[TransferResult], int, tuple[int, int]]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                await _funded(ledger, 100)
                assert await ledger.post([Transfer("load-0", FUND, IN_DOUBT, 1, 1)]) == [
                    TransferResult.CREATED
                ]
                await other.execute(
                    "UPDATE accounts SET debits_posted = debits_posted + 50 WHERE id = $1", FUND
                )
                opened = mock.Mock(side_effect=_TRANSACTION)
                with mock.patch.object(KeptAlive, "transaction", lambda *a, **k: opened(*a, **k)):
                    result = await ledger.post([Transfer("load-80", FUND, IN_DOUBT, 80, 1)])
                found = (await ledger.balances([FUND]))[FUND]
                return (
                    result,
                    opened.call_count,
                    (found.debits_posted_fen, found.credits_posted_fen),
                )
            finally:
                await other.close()
                await ledger.close()

    result, transactions, totals = asyncio.run(main())
    assert result == [TransferResult.INSUFFICIENT_FUNDS]
    assert transactions == 1  # the run again, its read locking the fund
    assert totals == (51, 100)


def test_a_transfer_id_another_writer_took_is_found_not_posted_again() -> None:
    """Two writers that know the accounts; the second takes an id the first has posted as new:
    its write fails on the id, and its batch, run again from a read, finds the transfer."""

    async def main() -> tuple[list[TransferResult], tuple[int, int]]:
        async with fresh_schema() as schema:
            ledgers = [await PgLedger.open(DSN, schema=schema) for _ in range(2)]
            try:
                await _funded(ledgers[0], 100)
                for n, ledger in enumerate(ledgers):  # each learns the accounts
                    await ledger.post([Transfer(f"warm-{n}", FUND, IN_DOUBT, 1, 1)])
                load = Transfer("load-30", FUND, IN_DOUBT, 30, 1)
                assert await ledgers[0].post([load]) == [TransferResult.CREATED]
                again = await ledgers[1].post([load])
                found = (await ledgers[1].balances([FUND]))[FUND]
                return again, (found.debits_posted_fen, found.credits_posted_fen)
            finally:
                for ledger in ledgers:
                    await ledger.close()

    again, totals = asyncio.run(main())
    assert again == [TransferResult.EXISTS]
    assert totals == (32, 100)


@pytest.fixture
def world() -> Iterator[tuple[PgEngine, str]]:
    with pg_engine() as found:
        yield found


def test_a_completion_of_a_bill_the_process_approved_is_decided_with_no_read(
    world: tuple[PgEngine, str],
) -> None:
    """An advice after its bill's approval in the same worker: the card's accounts and the bill
    known, its batch is one statement; the bill and the accumulators move as with a read."""

    async def scenario() -> None:
        async with worker(*world) as (service, ledger):
            warm, bill = await submitted(service, "K1"), await submitted(service, "K2")
            for known in (warm, bill):
                await service.approve_bill_async(known.bill_id, "H001", CARD, NOW)
            paid = warm.split.personal_account_fen
            await in_ledger(service, ledger, warm.bill_id, paid)  # the card's accounts known
            async with _reads() as reads:
                paid = bill.split.personal_account_fen
                record, changed = await in_ledger(service, ledger, bill.bill_id, paid)
            assert reads == []
            assert changed and record.state is BillState.COMPLETED
            both = sum((b.split.delta for b in (bill,)), warm.split.delta)
            assert service.accumulators("P11", 2026)[0] == both

    asyncio.run(scenario())


def test_a_decision_on_a_remembered_bill_that_the_write_would_not_check_is_read(
    world: tuple[PgEngine, str],
) -> None:
    """A bill this worker completed (remembered so), voided by another worker meanwhile: a
    second completion from memory would be no move (nothing for the write to check), so it is
    decided from a read — and refused, the bill being voided."""

    async def scenario() -> None:
        async with worker(*world) as (one, ledger), worker(*world) as (other, _):
            bill = await submitted(one, "R1")
            await one.approve_bill_async(bill.bill_id, "H001", CARD, NOW)
            paid = bill.split.personal_account_fen
            await in_ledger(one, ledger, bill.bill_id, paid)
            await asyncio.to_thread(other.void_bill, bill.bill_id, NOW)
            async with _reads() as reads:
                with pytest.raises(BillStateError) as raised:  # not "completed" from memory
                    await in_ledger(one, ledger, bill.bill_id, paid)
            assert raised.value.state is BillState.VOIDED
            assert len(reads) == 1

    asyncio.run(scenario())


def test_a_move_decided_on_a_remembered_bill_moved_elsewhere_does_not_apply(
    world: tuple[PgEngine, str],
) -> None:
    """A bill this worker approved (remembered so), reversed by another worker meanwhile: its
    completion, a move from "approved" decided from memory, does not apply; decided again from
    a read it is refused, the debit posted, the accumulators untouched."""

    async def scenario() -> None:
        async with worker(*world) as (one, ledger), worker(*world) as (other, _):
            warm, bill = await submitted(one, "M1"), await submitted(one, "M2")
            for known in (warm, bill):
                await one.approve_bill_async(known.bill_id, "H001", CARD, NOW)
            await in_ledger(one, ledger, warm.bill_id, warm.split.personal_account_fen)
            await asyncio.to_thread(other.reverse_bill, bill.bill_id, NOW)
            with pytest.raises(BillStateError) as raised:
                await in_ledger(one, ledger, bill.bill_id, bill.split.personal_account_fen)
            assert raised.value.state is BillState.REVERSED
            assert one.accumulators("P11", 2026)[0] == warm.split.delta

    asyncio.run(scenario())


def test_a_batch_reads_only_the_bills_the_process_does_not_remember(
    world: tuple[PgEngine, str],
) -> None:
    """An approval of a bill submitted through another worker and a completion of one this
    worker approved, together: only the first bill is read."""

    async def scenario() -> None:
        async with worker(*world) as (one, ledger), worker(*world) as (other, _):
            warm, bill = await submitted(one, "P1"), await submitted(one, "P2")
            for known in (warm, bill):
                await one.approve_bill_async(known.bill_id, "H001", CARD, NOW)
            await in_ledger(one, ledger, warm.bill_id, warm.split.personal_account_fen)
            elsewhere = await submitted(other, "P3")
            asked: list[list[str]] = []
            async with _reads(asked):
                approved, (completed, changed) = await asyncio.gather(
                    one.approve_bill_async(elsewhere.bill_id, "H001", CARD, NOW),
                    in_ledger(one, ledger, bill.bill_id, bill.split.personal_account_fen),
                )
            assert approved.state is BillState.APPROVED
            assert changed and completed.state is BillState.COMPLETED
            assert [elsewhere.bill_id] in asked
            assert not any(bill.bill_id in read for read in asked)

    asyncio.run(scenario())


def test_a_linked_refusal_decided_on_a_stale_account_is_not_answered_unchecked() -> None:
    """The writer knows the fund at 99; another process credits it 100. A linked load of 150
    decided on what the writer knew is refused, and a linked refusal writes nothing — so no
    write checks the fund: the refusal must come from a read, not from memory."""

    async def main() -> tuple[list[TransferResult], tuple[int, int]]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                await _funded(ledger, 100)
                assert await ledger.post([Transfer("load-0", FUND, IN_DOUBT, 1, 1)]) == [
                    TransferResult.CREATED
                ]
                await other.execute(
                    "UPDATE accounts SET credits_posted = credits_posted + 100 WHERE id = $1", FUND
                )
                load = Transfer("load-150", FUND, IN_DOUBT, 150, 1)
                result = await ledger.post([load], linked=True)
                found = (await ledger.balances([FUND]))[FUND]
                return result, (found.debits_posted_fen, found.credits_posted_fen)
            finally:
                await other.close()
                await ledger.close()

    result, totals = asyncio.run(main())
    assert result == [TransferResult.CREATED]
    assert totals == (151, 200)


def test_a_linked_event_sent_again_to_its_writer_is_found_not_refused() -> None:
    """A linked load this writer posted, emptying the fund, sent again (a retransmission): its
    batch, on accounts the writer knows, takes the ids as new and is refused for want of funds
    — a linked refusal writes nothing, so no insert finds the ids taken: the batch must be
    decided from a read of its ids, and answer "exists", not a refusal of money posted."""

    async def main() -> tuple[list[TransferResult], list[TransferResult], tuple[int, int]]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            try:
                await _funded(ledger, 100)
                load = [Transfer("load-100", FUND, IN_DOUBT, 100, 1)]
                first = await ledger.post(load, linked=True)
                again = await ledger.post(load, linked=True)
                found = (await ledger.balances([FUND]))[FUND]
                return first, again, (found.debits_posted_fen, found.credits_posted_fen)
            finally:
                await ledger.close()

    first, again, totals = asyncio.run(main())
    assert first == [TransferResult.CREATED]
    assert again == [TransferResult.EXISTS]
    assert totals == (100, 100)

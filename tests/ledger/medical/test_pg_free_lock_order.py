"""The lock order of a PostgreSQL group commit whose write runs with no transaction open
(``ledger.pg_write``) is the order of a batch run in a transaction: the accounts (the card's,
then the shared ones), then the people's locks. A batch in a transaction holds a payable it has
moved when its bill moves or its submissions take a person's lock; a no-transaction write that
took that person's lock first and then waited for the payable would deadlock with it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.medical.bills import BillState
from ledger.medical.pg_batch import PERSON_LOCK
from ledger.pg_bridge import server_settings, split_url
from ledger.pg_engine import PgEngine
from tests.support.medical_pg import pg_engine
from tests.support.medical_pg_ledger import CARD, PAYABLE, in_ledger, submitted, worker
from tests.support.medical_world import NOW
from tests.support.pg import until_waiting

pytestmark = pytest.mark.postgres

_TRY_PERSON = "SELECT pg_try_advisory_xact_lock($1, hashtext($2::varchar || '/' || $3::int))"


@pytest.fixture
def world() -> Iterator[tuple[PgEngine, str]]:
    with pg_engine() as found:
        yield found


def test_a_write_waiting_for_a_payable_holds_no_persons_lock(
    world: tuple[PgEngine, str],
) -> None:
    """A completion's batch (no transaction open) waits for the institution's payable, which
    another transaction holds: meanwhile the bill's person is not locked by it, so that
    transaction (a batch that moved the payable, then submits a bill of the same person) takes
    the person's lock and both commit — no deadlock, no run again."""

    async def scenario() -> None:
        async with worker(*world) as (service, ledger):
            first = await submitted(service, "L0")  # its completion opens the card's accounts
            paid = first.split.personal_account_fen
            await service.approve_bill_async(first.bill_id, "H001", CARD, NOW)
            await in_ledger(service, ledger, first.bill_id, paid)
            bill = await submitted(service, "L1")
            await service.approve_bill_async(bill.bill_id, "H001", CARD, NOW)
            dsn, schema = split_url(world[1])
            other = await asyncpg.connect(dsn, server_settings=server_settings(schema))
            try:
                holding = other.transaction()
                await holding.start()
                await other.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", PAYABLE)
                completing = asyncio.create_task(in_ledger(service, ledger, bill.bill_id, paid))
                await until_waiting(other)  # the batch's write, for the payable
                person_free = await other.fetchval(
                    _TRY_PERSON, PERSON_LOCK, bill.person_id, bill.year
                )
                await holding.commit()
                record, changed = await completing
            finally:
                await other.close()
            assert person_free, "the write holds the person's lock while it waits for a payable"
            assert changed and record.state is BillState.COMPLETED

    asyncio.run(scenario())

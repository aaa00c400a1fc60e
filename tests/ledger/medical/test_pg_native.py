"""The medical store's native writes on PostgreSQL (`ledger.medical.pg_store`): the daemon's
transitions awaited on a pool of the caller's loop refuse exactly as on SQLite, a record a
worker remembers never answers for the database, a person's read-split-reserve is serialised by
that person's lock only (another person's writes go on while it is held), and the store agrees
with the in-memory model. Several stores on one schema stand for several workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.medical.bills import BillState, BillStateError, Submission
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.pg_bridge import PgBridge, server_settings, split_url
from ledger.pg_engine import PgEngine
from ledger.sqlite_ledger import SqliteLedger
from tests.support.medical_model import ACTIONS, _apply
from tests.support.medical_pg import pg_engine
from tests.support.medical_world import DAY, HOLDERS, NOW, memory_service, sql_world

pytestmark = pytest.mark.postgres

CARD, RETIREE, _ = (holder.card_no for holder in HOLDERS)
PERSON_LOCK_CLASS = 0x6D656473  # migration 0008's key space of the per-person locks
LATER = NOW + dt.timedelta(hours=25)  # past a bill's expiry


@pytest.fixture
def world() -> Iterator[tuple[PgEngine, str]]:
    with pg_engine() as found:
        yield found


@asynccontextmanager
async def worker(engine: PgEngine, url: str) -> AsyncIterator[MedicalService]:
    """A daemon worker's service: the store's transitions on a pool of this loop."""
    dsn, schema = split_url(url)
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=4, server_settings=server_settings(schema)
    )
    store = SqlMedicalStore(engine, pool=pool)
    try:
        yield MedicalService(store, SqlDirectory(engine))  # type: ignore[arg-type]
    finally:
        store.close()
        await pool.close()


def _bill(quantity: int = 10) -> Bill:
    return Bill((BillLine("A01", quantity, 1000),))


async def _submit(service: MedicalService, number: str, card: str = CARD) -> str:
    submission = Submission(number, card, DAY, _bill())
    record, _ = await asyncio.to_thread(service.submit_bill, "H001", submission, NOW)
    return record.bill_id


async def _outcome(call: Awaitable[Any]) -> object:
    """What an async call answered: a refusal's code or type, else the bill's state (and
    whether it changed)."""
    try:
        found = await call
    except MedicalError as error:
        return error.code
    except BillStateError as error:
        return f"{type(error).__name__}:{error.state.value}"
    if isinstance(found, tuple):
        return found[0].state.value, found[1]
    return found.state.value


async def refusals(service: MedicalService) -> list[object]:
    """Every refusal of the daemon's two transitions, then the accepted forms."""
    first = await _submit(service, "R1")
    stale = await _submit(service, "R2")
    third = await _submit(service, "R3")
    record = service.get_bill(first)
    assert record is not None
    total, personal = record.split.total_fen, record.split.personal_account_fen
    approve = service.approve_bill_async
    complete = service.complete_paid_bill_async
    outcomes = [
        await _outcome(approve("0000000000000000", "H001", CARD, NOW, total)),
        await _outcome(approve(first, "H002", CARD, NOW, total)),
        await _outcome(approve(first, "H001", CARD, NOW, total + 1)),
        await _outcome(approve(first, "H001", RETIREE, NOW, total)),
        await _outcome(approve(stale, "H001", CARD, LATER, total)),
        await _outcome(approve(stale, "H001", CARD, LATER, total)),  # expired: a state error
        await _outcome(complete(first, personal, NOW)),  # not approved yet
        await _outcome(approve(first, "H001", CARD, NOW, total)),
        await _outcome(approve(first, "H001", CARD, NOW)),  # a repeat changes nothing
        await _outcome(complete("0000000000000000", personal, NOW)),
        await _outcome(complete(first, personal - 1, NOW)),
        await _outcome(complete(first, personal, NOW)),
        await _outcome(complete(first, personal, NOW)),
        await _outcome(approve(first, "H001", CARD, NOW)),  # completed: too late
        await _outcome(approve(third, "H001", CARD, NOW)),
    ]
    await asyncio.to_thread(service.reverse_bill, third, NOW)
    outcomes.append(await _outcome(complete(third, personal, NOW)))
    outcomes.append(service.accumulators("P11", 2026))
    return outcomes


def test_the_daemons_refusals_on_the_pool_are_sqlites(
    world: tuple[PgEngine, str], tmp_path: Path
) -> None:
    engine = sql_world(tmp_path / "ledger.db")
    ledger = SqliteLedger.open(tmp_path / "ledger.db")
    store = SqlMedicalStore(engine, ledger_writer=ledger.writer)

    async def on_sqlite() -> list[object]:
        try:
            return await refusals(MedicalService(store, SqlDirectory(engine)))
        finally:
            store.close()
            await ledger.close()

    async def on_postgres() -> list[object]:
        async with worker(*world) as service:
            return await refusals(service)

    expected = asyncio.run(on_sqlite())
    engine.dispose()
    assert expected[:7] == [
        "not_found",
        "not_found",
        "amount_mismatch",
        "card_mismatch",
        "expired",
        "BillStateError:expired",
        "BillStateError:open",
    ]
    assert expected[11:16] == [
        ("completed", True),
        ("completed", False),
        "BillStateError:completed",
        "approved",
        "BillStateError:reversed",
    ]
    assert asyncio.run(on_postgres()) == expected


def test_a_remembered_record_never_answers_for_the_database(
    world: tuple[PgEngine, str],
) -> None:
    async def scenario() -> None:
        async with worker(*world) as one, worker(*world) as other:
            reversed_, moved = await _submit(one, "M1"), await _submit(one, "M2")
            approved = await one.approve_bill_async(reversed_, "H001", CARD, NOW)  # remembered
            await asyncio.to_thread(other.reverse_bill, reversed_, NOW)
            with pytest.raises(BillStateError):  # not the remembered "already approved"
                await one.approve_bill_async(reversed_, "H001", CARD, NOW)
            with pytest.raises(BillStateError):
                paid = approved.split.personal_account_fen
                await one.complete_paid_bill_async(reversed_, paid, NOW)
            # remembered as open (its submission); approved by the other worker meanwhile
            await other.approve_bill_async(moved, "H001", CARD, NOW)
            record = other.get_bill(moved)
            assert record is not None
            personal = record.split.personal_account_fen
            done, changed = await one.complete_paid_bill_async(moved, personal, NOW)
            assert changed and done.state is BillState.COMPLETED
            assert one.accumulators("P11", 2026)[0] == record.split.delta

    asyncio.run(scenario())


async def _waiting_for_a_person_lock(connection: asyncpg.Connection) -> bool:
    count = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = $1",
        PERSON_LOCK_CLASS,
    )
    return bool(count)


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(3000):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def test_a_persons_submission_waits_for_that_person_only_and_splits_again(
    world: tuple[PgEngine, str],
) -> None:
    """While another transaction holds P11's lock and uses up P11's deductible, a submission for
    P11 waits, P29's bills are submitted, approved and completed, and the P11 bill is then
    split again against the deductible used: never both."""
    engine, url = world
    dsn, schema = split_url(url)

    async def scenario() -> None:
        async with worker(engine, url) as service:
            retiree_bill = await _submit(service, "P1", RETIREE)
            await service.approve_bill_async(retiree_bill, "H001", RETIREE, NOW)
            holder = await asyncpg.connect(dsn, server_settings=server_settings(schema))
            try:  # closing the holder on a failure rolls back and frees the waiting submission
                transaction = holder.transaction()
                await transaction.start()
                await holder.execute("SELECT medical_person_lock('P11', 2026)")
                await holder.execute(  # the whole deductible, committed with the lock held
                    "SELECT medical_add('P11', 2026, ARRAY[30000, 30000, 0, 0, 0]::bigint[], 1)"
                )
                waiting = asyncio.ensure_future(_submit(service, "W1"))
                await _until(lambda: _waiting_for_a_person_lock(holder))
                assert not waiting.done()
                # another person's writes, all taking P29's lock, go through meanwhile
                record = service.get_bill(retiree_bill)
                assert record is not None
                paid = service.complete_paid_bill_async(
                    retiree_bill, record.split.personal_account_fen, NOW
                )
                done, changed = await asyncio.wait_for(paid, 60)
                assert changed and done.state is BillState.COMPLETED
                await asyncio.wait_for(_submit(service, "P2", RETIREE), 60)
                assert not waiting.done()
                await transaction.commit()
            finally:
                await holder.close()
            bill_id = await waiting
            stored = service.get_bill(bill_id)
            assert stored is not None and stored.split.delta.deductible_fen == 0
            assert service.accumulators("P11", 2026)[1].deductible_fen == 30000

    asyncio.run(scenario())


def test_concurrent_submissions_on_two_workers_never_share_the_deductible(
    world: tuple[PgEngine, str],
) -> None:
    engine, url = world
    second = PgBridge(url)
    stores = [SqlMedicalStore(engine), SqlMedicalStore(PgEngine(second))]
    services = [MedicalService(store, SqlDirectory(engine)) for store in stores]  # type: ignore[arg-type]
    results: list[int] = []
    errors: list[BaseException] = []

    def submit(number: int) -> None:
        try:
            submission = Submission(f"C{number}", CARD, DAY, _bill())
            record, _ = services[number % 2].submit_bill("H001", submission, NOW)
            results.append(record.split.delta.deductible_fen)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    second.close()
    assert not errors
    assert sorted(results) == [0] * 5 + [10000] * 3
    assert services[0].accumulators("P11", 2026)[1].deductible_fen == 30000


def test_one_bill_completed_by_two_workers_at_once_counts_once(
    world: tuple[PgEngine, str],
) -> None:
    async def scenario() -> None:
        async with worker(*world) as one, worker(*world) as other:
            bill_id = await _submit(one, "D1")
            record = (await one.approve_bill_async(bill_id, "H001", CARD, NOW)).split
            paid = record.personal_account_fen
            outcomes = await asyncio.gather(
                *(w.complete_paid_bill_async(bill_id, paid, NOW) for w in (one, other, one))
            )
            assert sorted(changed for _, changed in outcomes) == [False, False, True]
            assert {done.state for done, _ in outcomes} == {BillState.COMPLETED}
            assert one.accumulators("P11", 2026)[0] == record.delta

    asyncio.run(scenario())


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 3)), max_size=20))
def test_postgres_store_agrees_with_the_memory_model(ops: list[tuple[str, int]]) -> None:
    with pg_engine() as (engine, _):
        store = SqlMedicalStore(engine)
        services = [memory_service(), MedicalService(store, SqlDirectory(engine))]  # type: ignore[arg-type]
        outcomes = [[_apply(svc, action, n) for action, n in ops] for svc in services]
        assert outcomes[0] == outcomes[1]
        assert services[0].accumulators("P11", 2026) == services[1].accumulators("P11", 2026)
        store.close()

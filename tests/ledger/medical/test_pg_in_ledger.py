"""A card debit's bill completed inside the PostgreSQL ledger's group commit
(`PgLedger.post_and_call` with the store's `LedgerTransition`, `PgWrites.transitions`), and the
daemon's other transitions in its batches (`PgLedger.call`): they answer exactly as the pool's
`approve_bill_async` and `complete_paid_bill_async` do, the completions of one batch move
together, the same bill twice in a batch completes once, and a record another worker moved
meanwhile is read again rather than trusted; every refusal leaves its debit posted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger import events as ev
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.medical.bills import (
    BillRecord,
    BillState,
    BillStateError,
    DuplicateBillError,
    Submission,
)
from ledger.medical.pg_batch import LedgerTransition
from ledger.medical.pg_store import PgWrites
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from ledger.pg_bridge import server_settings, split_url
from ledger.pg_engine import PgEngine
from ledger.pg_ledger import PgLedger
from tests.support.medical_pg import pg_engine
from tests.support.medical_pg_ledger import CARD, PAYABLE, in_ledger, submitted, worker
from tests.support.medical_world import HOLDERS, NOW
from tests.support.pg import until_waiting

pytestmark = pytest.mark.postgres

_, RETIREE, _ = (holder.card_no for holder in HOLDERS)
POOL = account_id(K.POOLED_FUND, ev.CENTRE)


@pytest.fixture
def world() -> Iterator[tuple[PgEngine, str]]:
    with pg_engine() as found:
        yield found


async def outcome(call: Any) -> object:
    try:
        record, changed = await call
    except MedicalError as error:
        return error.code
    except BillStateError as error:
        return f"BillStateError:{error.state.value}"
    return record.state.value, changed


async def attempts(service: MedicalService, ledger: PgLedger | None) -> list[object]:
    """Approvals and completions of every kind, on the pool (``ledger`` None) or in the
    ledger's batches (a completion with its debit)."""

    def complete(bill_id: str, amount: int) -> Any:
        if ledger is None:
            return service.complete_paid_bill_async(bill_id, amount, NOW)
        return in_ledger(service, ledger, bill_id, amount)

    async def approve(bill_id: str, card: str = CARD) -> tuple[BillRecord, bool]:
        return await service.approve_bill_async(bill_id, "H001", card, NOW), True

    first, reversed_ = await submitted(service, "A1"), await submitted(service, "A2")
    personal = first.split.personal_account_fen
    found = [
        await outcome(approve("0000000000000000")),
        await outcome(approve(first.bill_id, RETIREE)),
        await outcome(complete(first.bill_id, personal)),  # not approved yet
    ]
    for bill in (first, reversed_):
        await service.approve_bill_async(bill.bill_id, "H001", CARD, NOW)
    await asyncio.to_thread(service.reverse_bill, reversed_.bill_id, NOW)
    found += [
        await outcome(complete("0000000000000000", personal)),
        await outcome(complete(first.bill_id, personal - 1)),
        await outcome(complete(first.bill_id, personal)),
        await outcome(complete(first.bill_id, personal)),
        await outcome(complete(reversed_.bill_id, personal)),
        service.accumulators("P11", 2026),
    ]
    return found


def test_a_completion_in_the_ledger_answers_as_the_pools(
    world: tuple[PgEngine, str],
) -> None:
    async def by(engine: PgEngine, url: str, pool: bool) -> list[object]:
        async with worker(engine, url, in_ledger=not pool) as (service, ledger):
            return await attempts(service, None if pool else ledger)

    by_pool = asyncio.run(by(*world, pool=True))
    with pg_engine() as other:  # the same bills, numbers and times on a world of their own
        in_the_ledger = asyncio.run(by(*other, pool=False))
    assert by_pool[:8] == [
        "not_found",
        "card_mismatch",
        "BillStateError:open",
        "not_found",
        "amount_mismatch",
        ("completed", True),
        ("completed", False),
        "BillStateError:reversed",
    ]
    assert in_the_ledger == by_pool


def test_a_batch_of_completions_moves_together_and_a_bill_twice_completes_once(
    world: tuple[PgEngine, str],
) -> None:
    async def scenario() -> None:
        async with worker(*world) as (service, ledger):
            bills = [
                await submitted(service, f"B{n}", CARD if n % 2 else RETIREE) for n in range(4)
            ]
            for bill in bills:
                await service.approve_bill_async(bill.bill_id, "H001", bill.card_no, NOW)
            twice = [*bills, bills[0]]
            done = await asyncio.gather(
                *(
                    in_ledger(service, ledger, b.bill_id, b.split.personal_account_fen)
                    for b in twice
                )
            )
            assert {record.state for record, _ in done} == {BillState.COMPLETED}
            assert [changed for _, changed in done][:4] == [True] * 4
            assert not done[4][1]  # the same bill again, in the same batch: no second commit
            committed = service.accumulators("P11", 2026)[0]
            assert committed == bills[1].split.delta + bills[3].split.delta
            pooled = sum(b.split.pooled_fen for b in bills)  # once each
            personal = sum(b.split.personal_account_fen for b in twice)  # five debits
            balance = (await ledger.balances([PAYABLE]))[PAYABLE]
            assert balance.credits_posted_fen == pooled + personal

    asyncio.run(scenario())


def test_a_record_moved_by_another_worker_is_read_again(
    world: tuple[PgEngine, str],
) -> None:
    async def scenario() -> None:
        async with worker(*world) as (one, ledger), worker(*world) as (other, _):
            reversed_, moved = await submitted(one, "M1"), await submitted(one, "M2")
            approved = await one.approve_bill_async(reversed_.bill_id, "H001", CARD, NOW)
            await asyncio.to_thread(other.reverse_bill, reversed_.bill_id, NOW)
            paid = approved.split.personal_account_fen
            with pytest.raises(BillStateError):  # not the remembered "approved"
                await in_ledger(one, ledger, reversed_.bill_id, paid)
            # remembered as open (its submission); approved by the other worker meanwhile
            await other.approve_bill_async(moved.bill_id, "H001", CARD, NOW)
            record, changed = await in_ledger(one, ledger, moved.bill_id, paid)
            assert changed and record.state is BillState.COMPLETED
            assert one.accumulators("P11", 2026)[0] == moved.split.delta

    asyncio.run(scenario())


def test_the_transitions_fold_into_the_batchs_read_and_write(
    world: tuple[PgEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approvals and completions decide on the bills the batch's one read brings and move in
    its one write: the store's own statements (`PgWrites.transitions`) never run."""
    alone: list[int] = []

    async def transitions(_: object, db: asyncpg.Connection, writes: list[Any]) -> list[Any]:
        alone.append(len(writes))
        raise AssertionError("a transition ran on its own")

    monkeypatch.setattr(PgWrites, "transitions", transitions)

    async def scenario() -> None:
        async with worker(*world) as (service, ledger):
            bills = [await submitted(service, f"F{n}") for n in range(3)]
            await asyncio.gather(
                *(service.approve_bill_async(b.bill_id, "H001", CARD, NOW) for b in bills)
            )
            paid = [b.split.personal_account_fen for b in bills]
            done = await asyncio.gather(
                *(
                    in_ledger(service, ledger, b.bill_id, p)
                    for b, p in zip(bills, paid, strict=True)
                )
            )
            assert [(r.state, changed) for r, changed in done] == [(BillState.COMPLETED, True)] * 3
            assert service.accumulators("P11", 2026)[0] == sum(
                (b.split.delta for b in bills[1:]), bills[0].split.delta
            )

    asyncio.run(scenario())
    assert alone == []


def test_a_bill_moved_between_the_batchs_read_and_write_is_decided_again(
    world: tuple[PgEngine, str],
) -> None:
    """The batch reads its bills without locking them: a bill another process moves after the
    read makes the write not apply (nothing of the batch written), and the batch runs again
    from a fresh read — the completion refused, its debit posted, no pooled share."""

    async def scenario() -> None:
        async with worker(*world) as (service, ledger):
            bill = await submitted(service, "C1")
            approved = await service.approve_bill_async(bill.bill_id, "H001", CARD, NOW)
            pooled = (await ledger.balances([POOL]))[POOL].debits_posted_fen
            dsn, schema = split_url(world[1])
            other = await asyncpg.connect(dsn, server_settings=server_settings(schema))
            try:
                moving = other.transaction()
                await moving.start()
                await other.execute(
                    "UPDATE medical_bills SET state = 'reversed' WHERE bill_id = $1", bill.bill_id
                )
                paid = approved.split.personal_account_fen
                completing = asyncio.create_task(in_ledger(service, ledger, bill.bill_id, paid))
                await until_waiting(other)  # the batch's write, for the bill's row
                await moving.commit()
                with pytest.raises(BillStateError):
                    await completing
            finally:
                await other.close()
            payable = (await ledger.balances([PAYABLE]))[PAYABLE]
            assert payable.credits_posted_fen == paid  # the debit, once
            assert (await ledger.balances([POOL]))[POOL].debits_posted_fen == pooled

    asyncio.run(scenario())


def test_the_his_apis_submissions_run_in_the_ledgers_batches(
    world: tuple[PgEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the daemon's ledger, a submission (from the HIS API's thread) is a call of the
    ledger's batches, never a commit of its own on the bridge: created once, the same
    submission again answered with the stored bill, the same number with other content
    refused; submissions at once each counted against the person's view once."""
    on_bridge: list[str] = []

    def submit(_: object, record: BillRecord, compute: object) -> None:
        on_bridge.append(record.bill_id)
        raise AssertionError("a submission committed on its own")

    monkeypatch.setattr(PgWrites, "submit", submit)

    async def scenario() -> None:
        async with worker(*world) as (service, _):
            first = await submitted(service, "S1")
            again = await submitted(service, "S1")
            assert again.bill_id == first.bill_id and again.split == first.split
            other = Submission("S1", CARD, NOW.date(), Bill((BillLine("A01", 10, 2000),)))
            with pytest.raises(DuplicateBillError):
                await asyncio.to_thread(service.submit_bill, "H001", other, NOW)
            many = await asyncio.gather(*(submitted(service, f"S{n}") for n in range(2, 8)))
            assert len({bill.bill_id for bill in many}) == 6
            _, view = service.accumulators("P11", 2026)
            assert view == sum((b.split.delta for b in many), first.split.delta)

    asyncio.run(scenario())
    assert on_bridge == []


def test_one_batch_moving_a_bill_twice_and_one_voiding_and_releasing(
    world: tuple[PgEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that moves a bill twice (approved, then completed) moves it once, from its first
    state to its last, its accumulators committed; a batch's moves go together — a void takes
    its delta off the person's accumulators, a release nothing — and no batch runs the store's
    own statements (it never fell back to running its jobs one by one)."""

    async def transitions(_: object, db: asyncpg.Connection, writes: list[Any]) -> list[Any]:
        raise AssertionError("a transition ran on its own")

    monkeypatch.setattr(PgWrites, "transitions", transitions)

    async def scenario() -> None:
        async with worker(*world) as (service, ledger):
            bill, other = await submitted(service, "T1"), await submitted(service, "T2")
            write = service.paid_completion_write(bill.bill_id, 1, NOW)
            assert isinstance(write, LedgerTransition)

            def move(bill_id: str, target: BillState) -> Any:
                return ledger.call(replace(write, bill_id=bill_id, target=target, check=None))

            done = await asyncio.gather(
                move(bill.bill_id, BillState.APPROVED),
                move(bill.bill_id, BillState.COMPLETED),
                move(other.bill_id, BillState.APPROVED),
            )
            assert [(r.state, changed) for r, changed in done] == [
                (BillState.APPROVED, True),
                (BillState.COMPLETED, True),
                (BillState.APPROVED, True),
            ]
            committed, view = service.accumulators("P11", 2026)
            assert committed == bill.split.delta
            assert view == bill.split.delta + other.split.delta  # the other one reserved
            done = await asyncio.gather(
                move(bill.bill_id, BillState.VOIDED), move(other.bill_id, BillState.REVERSED)
            )
            assert [(r.state, changed) for r, changed in done] == [
                (BillState.VOIDED, True),
                (BillState.REVERSED, True),
            ]
            committed, view = service.accumulators("P11", 2026)
            assert committed == bill.split.delta - bill.split.delta
            assert view == committed

    asyncio.run(scenario())

"""The daemon's two hot transitions from the event loop — approval and completion by a card
debit — behave exactly as their synchronous forms on every store: in memory, on the store's own
group writer (through a thread), as jobs on the SQLite ledger's writer (the embedded default: no
thread hop) and on PostgreSQL's native writes without a pool of the caller's loop (through a
thread; with one: test_pg_native)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.medical.bills import BillState, Submission
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.sqlite_ledger import SqliteLedger
from tests.support.medical_pg import pg_engine
from tests.support.medical_world import DAY, HOLDERS, NOW, memory_service, sql_world

CARD, RETIREE, _ = (holder.card_no for holder in HOLDERS)
POSTGRES = pytest.mark.postgres


@pytest.fixture(
    params=["memory", "own-writer", "ledger-writer", pytest.param("postgres", marks=POSTGRES)]
)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MedicalService]:
    if request.param == "memory":
        yield memory_service()
        return
    if request.param == "postgres":
        with pg_engine() as (pg, _):
            pg_store = SqlMedicalStore(pg)
            yield MedicalService(pg_store, SqlDirectory(pg))  # type: ignore[arg-type]
            pg_store.close()
        return
    path = tmp_path / "ledger.db"
    engine = sql_world(path)
    ledger = SqliteLedger.open(path) if request.param == "ledger-writer" else None
    store = SqlMedicalStore(engine, ledger_writer=ledger.writer if ledger else None)
    assert ledger is None or type(store.writer).__name__ == "LedgerWrites"
    yield MedicalService(store, SqlDirectory(engine))
    store.close()
    if ledger is not None:
        asyncio.run(ledger.close())
    engine.dispose()


def test_approval_from_the_event_loop_checks_in_order_and_refusals_change_nothing(
    service: MedicalService,
) -> None:
    record, _ = service.submit_bill("H001", Submission("A1", CARD, DAY, _bill()), NOW)
    total = record.split.total_fen

    async def refusal(institution: str, card: str, amount: int) -> str:
        with pytest.raises(MedicalError) as refused:
            await service.approve_bill_async(record.bill_id, institution, card, NOW, amount)
        return refused.value.code

    assert asyncio.run(refusal("H002", RETIREE, total + 1)) == "not_found"
    assert asyncio.run(refusal("H001", RETIREE, total + 1)) == "amount_mismatch"
    assert asyncio.run(refusal("H001", RETIREE, total)) == "card_mismatch"
    unchanged = service.get_bill(record.bill_id)
    assert unchanged is not None and unchanged.state is BillState.OPEN
    approved = asyncio.run(service.approve_bill_async(record.bill_id, "H001", CARD, NOW, total))
    assert approved.state is BillState.APPROVED
    assert asyncio.run(service.approve_bill_async(record.bill_id, "H001", CARD, NOW)) == approved


def test_completion_by_a_card_debit_from_the_event_loop_counts_once(
    service: MedicalService,
) -> None:
    record, _ = service.submit_bill("H001", Submission("A2", CARD, DAY, _bill()), NOW)
    asyncio.run(service.approve_bill_async(record.bill_id, "H001", CARD, NOW))
    personal = record.split.personal_account_fen

    async def complete(bill_id: str, amount: int) -> tuple[bool, BillState]:
        done, changed = await service.complete_paid_bill_async(bill_id, amount, NOW)
        return changed, done.state

    for bill_id, amount, code in (("no-such-bill", personal, "not_found"),
                                  (record.bill_id, personal - 1, "amount_mismatch")):  # fmt: skip
        with pytest.raises(MedicalError) as refused:
            asyncio.run(complete(bill_id, amount))
        assert refused.value.code == code
    assert service.accumulators("P11", 2026)[0] != record.split.delta  # nothing committed yet

    async def twice() -> list[tuple[bool, BillState]]:  # concurrent: one write wins
        return list(await asyncio.gather(*(complete(record.bill_id, personal) for _ in "ab")))

    outcomes = asyncio.run(twice())
    assert sorted(outcomes) == [(False, BillState.COMPLETED), (True, BillState.COMPLETED)]
    assert service.accumulators("P11", 2026)[0] == record.split.delta


def _bill() -> Bill:
    return Bill((BillLine("A01", 40, 1000),))

"""The POS's approval checks the institution, the amount and the card in one write (one
thread hop on the switch's hot path), in that order, and a refusal changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.medical.bills import BillState, Submission
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from tests.support.medical_world import DAY, HOLDERS, NOW, memory_service, sql_service

CARD, RETIREE, _ = (holder.card_no for holder in HOLDERS)


@pytest.fixture(params=["memory", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MedicalService]:
    if request.param == "memory":
        yield memory_service()
    else:
        svc = sql_service(tmp_path / "ledger.db")
        yield svc
        svc.store.engine.dispose()  # type: ignore[attr-defined]


def test_the_amount_is_checked_after_the_institution_and_before_the_card(
    service: MedicalService,
) -> None:
    sub = Submission("N1", CARD, DAY, Bill((BillLine("A01", 40, 1000),)))
    record, _ = service.submit_bill("H001", sub, NOW)
    total = record.split.total_fen
    with pytest.raises(MedicalError) as other_institution:
        service.approve_bill(record.bill_id, "H002", RETIREE, NOW, total + 1)
    assert other_institution.value.code == "not_found"
    with pytest.raises(MedicalError) as wrong_amount:
        service.approve_bill(record.bill_id, "H001", RETIREE, NOW, total + 1)
    assert wrong_amount.value.code == "amount_mismatch"
    with pytest.raises(MedicalError) as wrong_card:
        service.approve_bill(record.bill_id, "H001", RETIREE, NOW, total)
    assert wrong_card.value.code == "card_mismatch"
    unchanged = service.get_bill(record.bill_id)
    assert unchanged is not None and unchanged.state is BillState.OPEN
    approved = service.approve_bill(record.bill_id, "H001", CARD, NOW, total)
    assert approved.state is BillState.APPROVED


def test_a_paid_bill_completes_in_one_write_once(service: MedicalService) -> None:
    sub = Submission("N2", CARD, DAY, Bill((BillLine("A01", 40, 1000),)))
    record, _ = service.submit_bill("H001", sub, NOW)
    service.approve_bill(record.bill_id, "H001", CARD, NOW)
    personal = record.split.personal_account_fen
    with pytest.raises(MedicalError) as unknown:
        service.complete_paid_bill("no-such-bill", personal, NOW)
    assert unknown.value.code == "not_found"
    with pytest.raises(MedicalError) as short:
        service.complete_paid_bill(record.bill_id, personal - 1, NOW)
    assert short.value.code == "amount_mismatch"
    unchanged = service.get_bill(record.bill_id)
    assert unchanged is not None and unchanged.state is BillState.APPROVED
    done, changed = service.complete_paid_bill(record.bill_id, personal, NOW)
    assert changed and done.state is BillState.COMPLETED
    assert not service.complete_paid_bill(record.bill_id, personal, NOW)[1]
    assert service.accumulators("P11", 2026)[0] == record.split.delta

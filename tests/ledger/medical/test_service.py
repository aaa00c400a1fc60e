"""The bill service on both stores: submission, idempotency, life cycle, accumulators."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.medical.accumulators import ZERO, Totals
from ledger.medical.bills import (
    BillState,
    BillStateError,
    DuplicateBillError,
    Submission,
)
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from tests.support.medical import known_bills as bills
from tests.support.medical_model import ACTIONS, CARD, LOST, RETIREE, _apply, submission
from tests.support.medical_pg import BACKENDS, service_on
from tests.support.medical_world import DAY, LENIENT, NOW, memory_service, sql_service


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MedicalService]:
    with service_on(request.param, tmp_path) as on_backend:
        yield on_backend


def test_submit_reserves_and_the_same_bill_twice_counts_once(service: MedicalService) -> None:
    sub = submission("N1", ("A01", 40, 1000))
    record, created = service.submit_bill("H001", sub, NOW)
    assert created and record.state is BillState.OPEN
    split = record.split
    assert (split.personal_account_fen, split.pooled_fen, split.self_pay_fen) == (30000, 9000, 1000)
    again, created_again = service.submit_bill("H001", sub, NOW)
    assert not created_again and again.bill_id == record.bill_id
    committed, view = service.accumulators("P11", 2026)
    assert committed == ZERO and view == split.delta
    with pytest.raises(DuplicateBillError):
        service.submit_bill("H001", submission("N1", ("A01", 41, 1000)), NOW)
    # another institution's bill number N1 is another bill
    other, created_other = service.submit_bill("H002", sub, NOW)
    assert created_other and other.bill_id != record.bill_id
    assert other.split.delta.deductible_fen == 20000  # level 2: 50000 less 30000 reserved


def test_life_cycle(service: MedicalService) -> None:
    record, _ = service.submit_bill("H001", submission("N1", ("A01", 40, 1000)), NOW)
    bill_id = record.bill_id
    with pytest.raises(MedicalError, match="another card"):
        service.approve_bill(bill_id, "H001", RETIREE, NOW)
    with pytest.raises(MedicalError):
        service.approve_bill(bill_id, "H002", CARD, NOW)
    assert service.approve_bill(bill_id, "H001", CARD, NOW).state is BillState.APPROVED
    with pytest.raises(BillStateError):
        service.cancel_bill("H001", bill_id, NOW)  # too late for the HIS: the POS has it
    done, changed = service.complete_bill(bill_id, NOW)
    assert changed and done.state is BillState.COMPLETED
    assert not service.complete_bill(bill_id, NOW)[1]
    committed, view = service.accumulators("P11", 2026)
    assert committed == view == record.split.delta
    assert service.void_bill(bill_id, NOW)[1]
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)
    assert not service.void_bill(bill_id, NOW)[1]


def test_cancel_reverse_and_expiry_release(service: MedicalService) -> None:
    first, _ = service.submit_bill("H001", submission("N1", ("A01", 10, 1000)), NOW)
    second, _ = service.submit_bill("H001", submission("N2", ("A01", 10, 1000)), NOW)
    third, _ = service.submit_bill("H001", submission("N3", ("A01", 10, 1000)), NOW)
    assert service.cancel_bill("H001", first.bill_id, NOW).state is BillState.CANCELLED
    service.approve_bill(second.bill_id, "H001", CARD, NOW)
    assert service.reverse_bill(second.bill_id, NOW)[0].state is BillState.REVERSED
    assert service.expire_bills(NOW + dt.timedelta(minutes=119)) == []
    assert service.expire_bills(NOW + dt.timedelta(minutes=121)) == [third.bill_id]
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)
    with pytest.raises(MedicalError, match="no such bill"):
        service.cancel_bill("H002", third.bill_id, NOW)


def test_refusals_store_nothing(service: MedicalService) -> None:
    with pytest.raises(MedicalError, match="no such card"):
        service.submit_bill(
            "H001", submission("N1", ("A01", 1, 1), card="6200000000000000999"), NOW
        )
    with pytest.raises(MedicalError, match="lost"):
        service.submit_bill("H001", submission("N1", ("A01", 1, 1), card=LOST), NOW)
    with pytest.raises(MedicalError, match="level"):
        service.submit_bill("H404", submission("N1", ("A01", 1, 1)), NOW)
    future = Submission("N1", CARD, dt.date(2031, 1, 1), Bill((BillLine("A01", 1, 1),)))
    with pytest.raises(MedicalError, match="no catalogue or policy"):
        service.submit_bill("H001", future, NOW)
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)


def test_special_category_and_retiree(service: MedicalService) -> None:
    sub = submission("N1", ("A01", 10, 1000), card=RETIREE, special="chronic")
    record, _ = service.submit_bill("H002", sub, NOW)
    assert (record.split.personal_account_fen, record.split.pooled_fen) == (2000, 8000)
    assert record.split.special_category == "chronic"


def test_offline_purchases_count_once(service: MedicalService) -> None:
    assert service.post_offline_purchase("000000000001", 7, "0000000000000011", "H001", 5000, DAY)
    assert not service.post_offline_purchase(
        "000000000001", 7, "0000000000000011", "H001", 5000, DAY
    )
    committed, _ = service.accumulators("P11", 2026)
    assert committed == Totals(eligible_fen=5000, deductible_fen=5000, personal_account_fen=5000)
    record, _ = service.submit_bill("H001", submission("N1", ("A01", 30, 1000)), NOW)
    assert record.split.personal_account_fen == 25000  # 5000 of the deductible was used offline


def test_price_check_stores_nothing(service: MedicalService) -> None:
    priced = service.price("H001", submission("N1", ("A01", 40, 1000)))
    assert priced.split.total_fen == 40000
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)


def test_concurrent_submissions_never_share_the_deductible(tmp_path: Path) -> None:
    service = sql_service(tmp_path / "ledger.db")
    results: list[int] = []
    errors: list[BaseException] = []

    def submit(number: int) -> None:
        try:
            record, _ = service.submit_bill(
                "H001", submission(f"N{number}", ("A01", 10, 1000)), NOW
            )
            results.append(record.split.delta.deductible_fen)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(results) == [0] * 5 + [10000] * 3
    assert service.accumulators("P11", 2026)[1].deductible_fen == 30000
    service.store.engine.dispose()  # type: ignore[attr-defined]


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["submit", "approve", "complete", "cancel", "void"]), st.integers(0, 3)
        ),
        max_size=25,
    )
)
def test_committed_accumulators_only_fall_by_a_void(ops: list[tuple[str, int]]) -> None:
    service = memory_service()
    ids: dict[int, str] = {}
    for action, number in ops:
        before = service.accumulators("P11", 2026)[0]
        changed = False
        try:
            if action == "submit":
                record, _ = service.submit_bill(
                    "H001", submission(f"N{number}", ("A01", 7 + number, 1000)), NOW
                )
                ids[number] = record.bill_id
            elif number in ids:
                bill_id = ids[number]
                if action == "approve":
                    service.approve_bill(bill_id, "H001", CARD, NOW)
                elif action == "complete":
                    service.complete_bill(bill_id, NOW)
                elif action == "cancel":
                    service.cancel_bill("H001", bill_id, NOW)
                else:
                    changed = service.void_bill(bill_id, NOW)[1]
        except (BillStateError, MedicalError):
            pass
        after = service.accumulators("P11", 2026)[0]
        if not (action == "void" and changed):
            assert after.covers(before)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bills, st.sampled_from([CARD, RETIREE]), st.sampled_from(["H001", "H002"]))
def test_the_same_bill_submitted_twice_counts_once(bill: Bill, card: str, institution: str) -> None:
    service = memory_service(LENIENT)
    person = "P11" if card == CARD else "P29"
    sub = Submission("N1", card, DAY, bill)
    first, created = service.submit_bill(institution, sub, NOW)
    second, created_again = service.submit_bill(institution, sub, NOW)
    assert created and not created_again and first == second
    assert service.accumulators(person, 2026)[1] == first.split.delta
    split = first.split
    assert split.personal_account_fen + split.pooled_fen + split.self_pay_fen == bill.total_fen


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 3)), max_size=20))
def test_sqlite_store_agrees_with_the_memory_model(ops: list[tuple[str, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        services = [memory_service(), sql_service(Path(tmp) / "ledger.db")]
        outcomes = [[_apply(svc, action, n) for action, n in ops] for svc in services]
        assert outcomes[0] == outcomes[1]
        assert services[0].accumulators("P11", 2026) == services[1].accumulators("P11", 2026)
        services[1].store.engine.dispose()  # type: ignore[attr-defined]


def test_authorisations_are_queued_for_the_card(tmp_path: Path) -> None:
    from ledger.medical.sql_reference import ReferenceData
    from tests.support.medical_world import NOW_US, sql_world

    engine = sql_world(tmp_path / "ledger.db")
    reference = ReferenceData(engine)
    assert reference.unwritten_authorisations() == [("P29", "chronic", 2026)]
    assert reference.mark_written("P29", "chronic", 2026)
    assert reference.unwritten_authorisations() == []
    assert reference.revoke("P29", "chronic", 2026, NOW_US)
    assert reference.authorise("P29", "chronic", 2026, NOW_US, "op")  # again: to be written
    assert reference.unwritten_authorisations() == [("P29", "chronic", 2026)]
    assert not reference.authorise("P29", "chronic", 2026, NOW_US, "op")
    token = reference.issue_credential("H001", NOW_US)
    assert reference.check_credential("H001", token)
    assert not reference.check_credential("H001", token + "x")
    assert not reference.check_credential("H002", token)
    assert reference.check_credential("H001", reference.issue_credential("H001", NOW_US))
    assert not reference.check_credential("H001", token)  # replaced
    engine.dispose()

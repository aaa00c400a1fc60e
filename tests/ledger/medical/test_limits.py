"""Plausibility limits on bills and the reservation rule (ledger.medical.limits): an implausible
bill is refused (`bill_over_limit`) with nothing stored, on both stores; an open bill holds the
person's year for `open_ttl` only, an approved one until 24 h after submission."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.medical.accumulators import ZERO
from ledger.medical.bills import BillState, Submission, bill_id_for
from ledger.medical.limits import BillLimits, check_bill
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from tests.support.medical import CATALOGUE
from tests.support.medical_pg import BACKENDS, service_on
from tests.support.medical_world import DAY, HOLDERS, NOW, memory_service, sql_service

CARD = HOLDERS[0].card_no


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MedicalService]:
    with service_on(request.param, tmp_path) as on_backend:
        yield on_backend


def submission(no: str, *lines: tuple[str, int, int]) -> Submission:
    return Submission(no, CARD, DAY, Bill(tuple(BillLine(*line) for line in lines)))


def refused(service: MedicalService, institution: str, sub: Submission, why: str) -> None:
    for attempt in (service.price, lambda i, s: service.submit_bill(i, s, NOW)):
        with pytest.raises(MedicalError, match=why) as caught:
            attempt(institution, sub)
        assert caught.value.code == "bill_over_limit"
    assert service.get_bill(bill_id_for(institution, sub.his_bill_no)) is None
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)


def test_the_probed_bill_is_refused_and_nothing_reserved(service: MedicalService) -> None:
    """Finding 5: 500 lines × 100 000 × 100 000 000 fen was stored (201) and reserved the
    person's whole annual pooled cap and personal-account share."""
    sub = submission("HUGE", *[("A01", 100_000, 100_000_000)] * 500)
    sub.bill.validate()  # within the structural bounds: only the plausibility limits refuse it
    refused(service, "H002", sub, "lines")


CASES = [
    ("lines", [("A01", 1, 1000)] * 301, "301 lines, more than 300"),
    ("quantity", [("A01", 10_001, 1)], "line 1: quantity 10001"),
    ("unit price", [("Z99", 1, 10_000_001)], "line 1: unit price 10000001 fen is over"),
    ("ceiling", [("A02", 1, 1), ("A01", 1, 10_001)], "line 2: .* 10 times the catalogue ceiling"),
    ("level total", [("B02", 10, 15000), ("A01", 2000, 1000)], "2000000 fen for a level 1"),
]


@pytest.mark.parametrize(("name", "lines", "why"), CASES, ids=[case[0] for case in CASES])
def test_each_limit_refuses_and_stores_nothing(
    service: MedicalService, name: str, lines: list[tuple[str, int, int]], why: str
) -> None:
    refused(service, "H001", submission("N1", *lines), why)


def test_the_level_decides_the_total_and_limits_are_configurable(
    service: MedicalService,
) -> None:
    big = submission("N1", ("B02", 10, 15000), ("A01", 2000, 1000))  # 150 000 + 2 000 000 fen
    with pytest.raises(MedicalError, match="level 1"):
        service.submit_bill("H001", big, NOW)
    record, created = service.submit_bill("H002", big, NOW)  # level 2: up to 20 000 000 fen
    assert created and record.split.total_fen == 2_150_000
    assert check_bill(big.bill, 1, CATALOGUE, BillLimits(total_max_fen_by_level=(10**6,) * 3))
    lenient = BillLimits(ceiling_multiple_max=0)
    assert check_bill(Bill((BillLine("A01", 1, 50_000),)), 1, CATALOGUE, lenient) is None
    with pytest.raises(ValueError):
        BillLimits(quantity_max=0)


def _hostage(service: MedicalService) -> tuple[str, Submission]:
    """H002 bills 10 000 000 fen: its open bill reserves the person's whole pooled cap."""
    record, _ = service.submit_bill("H002", submission("BIG", ("A01", 10_000, 1000)), NOW)
    assert record.split.delta.pooled_fen == 5_000_000  # the annual cap
    assert record.expires_at_us == int((NOW + dt.timedelta(hours=2)).timestamp() * 1e6)
    return record.bill_id, submission("LATER", ("A01", 400, 1000))


def test_an_open_bill_holds_the_year_for_two_hours_only(service: MedicalService) -> None:
    big_id, later = _hostage(service)
    assert service.price("H001", later).split.pooled_fen == 0  # held: above the annual cap
    soon = NOW + dt.timedelta(minutes=119)
    assert service.expire_bills(soon) == []
    after = NOW + dt.timedelta(minutes=121)
    with pytest.raises(MedicalError, match="expired"):  # the POS comes too late
        service.approve_bill(big_id, "H002", CARD, after)
    assert service.expire_bills(after + dt.timedelta(minutes=1)) == []  # expired by the POS
    record, _ = service.submit_bill("H001", later, after)
    assert record.split.pooled_fen == 333_000  # 400 000 less the 30 000 deductible, at 90%


def test_the_sweep_releases_an_open_bill_nobody_settles(service: MedicalService) -> None:
    big_id, later = _hostage(service)
    after = NOW + dt.timedelta(minutes=121)
    assert service.expire_bills(after) == [big_id]
    assert service.get_bill(big_id).state is BillState.EXPIRED  # type: ignore[union-attr]
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)
    assert service.price("H001", later).split.pooled_fen == 333_000


def test_an_approved_bill_holds_until_24_hours_after_submission(service: MedicalService) -> None:
    big_id, _ = _hostage(service)
    service.approve_bill(big_id, "H002", CARD, NOW + dt.timedelta(minutes=30))
    assert service.expire_bills(NOW + dt.timedelta(hours=23)) == []  # the card was presented
    assert service.get_bill(big_id).state is BillState.APPROVED  # type: ignore[union-attr]
    assert service.expire_bills(NOW + dt.timedelta(hours=25)) == [big_id]
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)


def test_ttls_are_checked() -> None:
    svc = memory_service()
    with pytest.raises(ValueError):
        MedicalService(svc.store, svc.directory, open_ttl=dt.timedelta(days=2))


def test_an_institutions_open_bills_for_a_card_share_the_level_total(
    service: MedicalService,
) -> None:
    """Many bills cannot hold more than one may: H001 (level 1: 2 000 000 fen)."""
    first = submission("N1", ("A01", 1500, 1000))
    record, _ = service.submit_bill("H001", first, NOW)
    with pytest.raises(MedicalError, match="open bills for this card would total 2100000 fen"):
        service.submit_bill("H001", submission("N2", ("A01", 600, 1000)), NOW)
    assert service.submit_bill("H001", first, NOW) == (record, False)  # the same bill: fine
    assert service.submit_bill("H002", submission("N2", ("A01", 600, 1000)), NOW)[1]
    later = NOW + dt.timedelta(minutes=121)  # N1 no longer held, swept or not
    assert service.submit_bill("H001", submission("N2", ("A01", 600, 1000)), later)[1]
    service.approve_bill(bill_id_for("H001", "N2"), "H001", CARD, later)
    # an approved bill is no longer held without the card: it does not count
    assert service.submit_bill("H001", submission("N3", ("A01", 1900, 1000)), later)[1]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_an_institution_has_a_few_open_bills_per_card(store: str, tmp_path: Path) -> None:
    limits = BillLimits(open_bills_max=2)
    if store == "memory":
        service = memory_service(limits)
    else:
        service = sql_service(tmp_path / "ledger.db", limits)
    free = [submission(f"N{n}", ("A01", 1, 0)) for n in range(4)]  # 0 fen: only the count
    assert service.submit_bill("H001", free[0], NOW)[1]
    assert service.submit_bill("H001", free[1], NOW)[1]
    with pytest.raises(MedicalError, match="has 2 open bills for this card already"):
        service.submit_bill("H001", free[2], NOW)
    assert service.submit_bill("H002", free[2], NOW)[1]  # another institution's own count
    service.cancel_bill("H001", bill_id_for("H001", "N0"), NOW)
    assert service.submit_bill("H001", free[3], NOW)[1]

"""The bill service driven by named actions, so that two stores can be run through the same
sequence and compared (tests/ledger/medical/test_service.py, test_pg_native.py)."""

from __future__ import annotations

import datetime as dt

from ledger.medical.bills import (
    BillStateError,
    Submission,
    bill_id_for,
)
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from tests.support.medical_world import DAY, HOLDERS, NOW

CARD, RETIREE, LOST = (holder.card_no for holder in HOLDERS)


def submission(
    no: str, *lines: tuple[str, int, int], card: str = CARD, special: str | None = None
) -> Submission:
    return Submission(no, card, DAY, Bill(tuple(BillLine(*line) for line in lines), special))


ACTIONS = ["submit", "approve", "complete", "cancel", "reverse", "void", "expire", "offline"]


def _apply(service: MedicalService, action: str, n: int) -> object:
    bill_id = bill_id_for("H001", f"N{n}")
    try:
        if action == "submit":
            record, created = service.submit_bill(
                "H001", submission(f"N{n}", ("A01", 9 + n, 1000), ("B01", 1, 2100)), NOW
            )
            return record.state.value, record.split.delta, created
        if action == "offline":
            return service.post_offline_purchase(
                "000000000001", n, "0000000000000011", "H001", 1000 * n, DAY
            )
        if action == "approve":
            return service.approve_bill(bill_id, "H001", CARD, NOW).state.value
        if action == "expire":
            return service.expire_bills(NOW + dt.timedelta(days=2))
        if action == "cancel":
            return service.cancel_bill("H001", bill_id, NOW).state.value
        step = {
            "complete": service.complete_bill,
            "reverse": service.reverse_bill,
            "void": service.void_bill,
        }[action]
        record, changed = step(bill_id, NOW)
        return record.state.value, changed
    except (BillStateError, MedicalError, KeyError) as error:
        return type(error).__name__

"""The HIS reconciliation listing (specs/his-api.yaml, ``GET /his/v1/reconciliation``): an
institution's bills of one service date with their state and shares, page by page by bill
number, and on every page the whole date's totals per state — what a charging system compares
with its own day (issue 26: "a reconciliation listing")."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ledger.medical.bills import BillRecord, DayTotal, MedicalStore
from switch.his_parse import DATE, ApiError, encode_cursor, parse_list_query


def _service_date(query: dict[str, str]) -> dt.date:
    text = query.get("service_date")
    if text is None:
        raise ApiError(400, "invalid_request", "service_date is required", field="?service_date")
    try:
        if DATE.match(text) is None:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        message = "service_date must be a date, YYYY-MM-DD"
        raise ApiError(400, "invalid_request", message, field="?service_date") from None


def _line(record: BillRecord) -> dict[str, Any]:
    split = record.split
    updated = dt.datetime.fromtimestamp(record.updated_at_us / 1e6, dt.UTC)
    return {
        "bill_id": record.bill_id,
        "his_bill_no": record.his_bill_no,
        "state": record.state.value,
        "total_fen": split.total_fen,
        "personal_account_fen": split.personal_account_fen,
        "pooled_fen": split.pooled_fen,
        "self_pay_fen": split.self_pay_fen,
        "updated_at": updated.isoformat(),
    }


def _total(total: DayTotal) -> dict[str, Any]:
    return {**total._asdict(), "state": total.state.value}


def reconciliation_page(
    store: MedicalStore, institution_id: str, query: dict[str, str]
) -> dict[str, Any]:
    """The page `query` asks for (`service_date`, required; `limit` 1 to 100, default 50;
    `cursor`), as the ReconciliationPage schema. Synchronous: run it in a worker thread."""
    day = _service_date(query)
    rest = {name: value for name, value in query.items() if name != "service_date"}
    if "since" in rest:
        message = "since is not a parameter of the reconciliation listing"
        raise ApiError(400, "invalid_request", message, field="?since")
    wanted = parse_list_query(rest)
    records = store.bills_dated(institution_id, day, wanted.after_no, wanted.limit)
    more = len(records) == wanted.limit
    return {
        "service_date": day.isoformat(),
        "totals": [_total(t) for t in store.dated_totals(institution_id, day)],
        "bills": [_line(record) for record in records],
        "next_cursor": encode_cursor(records[-1].his_bill_no) if more else None,
    }

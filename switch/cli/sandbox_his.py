"""The HIS half of the demo's sandbox — TEST ONLY: ``$MEDSWITCH_HOME/sandbox/his-examples.json``,
ready requests of the HIS API (specs/his-api.yaml, "Sandbox") for the first of the sandbox's
cards (the terminal sandbox's, `switch.cli.sandbox`), from its first hospital and pharmacy, dated
today in the centre's time zone, each with the answer it gets: a bill, a price check, the
catalogue, and one refusal of each kind a hospital's developer meets first. Rewritten whenever
the sandbox's quick-start is, so that its dates are today's."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

EXAMPLES = "his-examples.json"


def _first(database: Path, kind: str) -> str:
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT id FROM institutions WHERE kind = ? ORDER BY id LIMIT 1", (kind,)
        ).fetchone()
    return str(row[0])


def examples(
    database: Path, card_no: str, his_url: str, today: dt.date, test_only: str
) -> dict[str, Any]:
    hospital, pharmacy = _first(database, "hospital"), _first(database, "pharmacy")
    day = today.isoformat()

    def body(*lines: tuple[str, int, int], number: str | None = None) -> dict[str, Any]:
        bill: dict[str, Any] = {"card_no": card_no, "service_date": day}
        if number is not None:
            bill = {"his_bill_no": f"SANDBOX-{today:%Y%m%d}-{number}", **bill}
        bill["lines"] = [{"code": c, "quantity": q, "unit_price_fen": p} for c, q, p in lines]
        return bill

    def refused(code: str, field: str) -> dict[str, Any]:
        return {"status": 422, "code": code, "field": field}

    return {
        "test_only": test_only,
        "url": his_url,
        "credentials": "../his-credentials.txt (institution token: HTTP Basic user, password)",
        "hospital": hospital,
        "pharmacy": pharmacy,
        "card_no": card_no,
        "requests": [
            {
                "name": "submit a bill",
                "institution": hospital,
                "method": "POST",
                "path": "/his/v1/bills",
                "body": body(("A02", 1, 500), ("A01", 2, 1000), number="1"),
                "expect": {"status": 201},
            },
            {
                "name": "price check (no bill number)",
                "institution": hospital,
                "method": "POST",
                "path": "/his/v1/price-check",
                "body": body(("B01", 1, 2000)),
                "expect": {"status": 200},
            },
            {
                "name": "the catalogue",
                "institution": pharmacy,
                "method": "GET",
                "path": "/his/v1/catalogue",
                "expect": {"status": 200},
            },
            {
                "name": "an unknown code (codes are case-sensitive)",
                "institution": hospital,
                "method": "POST",
                "path": "/his/v1/price-check",
                "body": body(("a02", 1, 500)),
                "expect": refused("unknown_item", "/lines/0/code"),
            },
            {
                "name": "a pharmacy bills a bed-day",
                "institution": pharmacy,
                "method": "POST",
                "path": "/his/v1/price-check",
                "body": body(("A01", 1, 1000), ("B04", 1, 5000)),
                "expect": refused("category_not_allowed", "/lines/1/code"),
            },
            {
                "name": "a service date after today",
                "institution": hospital,
                "method": "POST",
                "path": "/his/v1/price-check",
                "body": {**body(("A01", 1, 1000)), "service_date": "2099-01-01"},
                "expect": refused("service_date_in_future", "/service_date"),
            },
        ],
    }


def write(out: Path, database: Path, his_url: str, today: dt.date, test_only: str) -> None:
    listing = json.loads((out / "terminals.json").read_text())
    card_no = listing["cards"][0]["card_no"]
    found = examples(database, card_no, his_url, today, test_only)
    (out / EXAMPLES).write_text(json.dumps(found, ensure_ascii=False, indent=1) + "\n")

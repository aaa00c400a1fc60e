"""Party statements through `medswitch statements institution|unit` on a temp demo database with a
day of business: card debits (ED and EP), bills split by the policy (甲 and 乙 lines), a void, an
offline purchase, contributions and their bank statement. The CSV and HTML show the movements,
the insurance shares by category and class, the unit's contributions and its members' spending;
a second run writes identical bytes; bad parties and ranges are refused; no card numbers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.dayend.calendar import Cutover
from ledger.demo import init_demo
from ledger.events import (
    BillCompletion,
    CardDebit,
    ContributionLine,
    Purse,
    StatementLine,
    Void,
    post_bill_completion,
    post_card_debit,
    post_contribution,
    post_contribution_received,
    post_void,
)
from ledger.medical.accumulators import ZERO
from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
from ledger.medical.codec import split_to_dict
from ledger.medical.policy import EXAMPLE, Category, parse_policy
from ledger.medical.split import Bill, BillLine, Person, split_bill
from ledger.sqlite_ledger import SqliteLedger
from switch.cli import main
from tests.support.operators import reader_env
from tests.support.personal import demo_keys

CUTOVER = Cutover.parse("23:00", "Asia/Shanghai")  # the [dayend] defaults
CATALOGUE = CatalogueVersion(
    1,
    dt.date(2026, 1, 1),
    {
        "A01": CatalogueItem("A01", "阿莫西林胶囊", "盒", 5000, Coverage.A),
        "B01": CatalogueItem("B01", "CT检查", "次", 40000, Coverage.B, 1000),
    },
)
SERIAL = "3100000000000001"  # cardholder 0000000001, unit u2 (1 + 1 % 20)


def _bill(db: Path, bill_id: str, lines: tuple[BillLine, ...], person: str) -> tuple[int, int]:
    split = split_bill(
        Bill(lines), CATALOGUE, parse_policy(EXAMPLE), Person(Category.EMPLOYED), 2, ZERO
    )
    now_us = time.time_ns() // 1000
    with sqlite3.connect(db) as c:
        c.execute(
            "INSERT INTO medical_bills (bill_id, institution_id, his_bill_no, card_no, person_id,"
            " year, service_date, request_digest, bill_json, split_json, state, created_at_us,"
            " expires_at_us, updated_at_us) VALUES (?, 'h1', ?, '6212340000000019', ?, 2026,"
            " '2026-11-25', '', '{}', ?, 'completed', ?, ?, ?)",
            (bill_id, bill_id, person, json.dumps(split_to_dict(split)), now_us, now_us, now_us),
        )
    return split.personal_account_fen, split.pooled_fen


async def _business(db: Path) -> None:
    big = _bill(db, "B1", (BillLine("A01", 4, 5000), BillLine("B01", 1, 40000)), "0000000001")
    small = _bill(db, "B2", (BillLine("A01", 1, 5000),), "0000000001")
    ledger = SqliteLedger.open(db)
    try:
        for serial_no, (personal, pooled), bill in ((1, big, "B1"), (2, small, "B2")):
            debit = CardDebit(
                "000000000001", serial_no, SERIAL, Purse.ED, personal, "h1", "h1", bill
            )
            assert (await post_card_debit(ledger, debit)).ok
            if pooled:
                assert (await post_bill_completion(ledger, BillCompletion(bill, "h1", pooled))).ok
        ep = CardDebit("000000000001", 3, SERIAL, Purse.EP, 800, "h1", "h1")
        assert (await post_card_debit(ledger, ep)).ok  # EP, offline: no bill
        assert (await post_void(ledger, Void("B2", "h1", "0000000001", small[1], small[0], 0))).ok
        line = ContributionLine("u2", "2026-11", "0000000001", 3000, 7000)
        assert (await post_contribution(ledger, line)).ok
        received = StatementLine("b1:20261125F00001", 0, "u2", 10_000)
        assert (await post_contribution_received(ledger, received)).ok
    finally:
        await ledger.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "demo.db"
    init_demo(path, 4, personal=demo_keys(path.parent))
    asyncio.run(_business(path))
    return path


def run(tmp: Path, *args: str, ok: bool = True) -> Result:
    """`medswitch statements ARGS` as an auditor logged in on the fixture's database."""
    reader = reader_env(tmp / "demo.db", tmp / "tokens")
    runner = CliRunner(env={"MEDSWITCH_HOME": str(tmp), **reader})
    result = runner.invoke(main, ["statements", *args])
    assert (result.exit_code == 0) is ok, result.output
    return result


def test_institution_statement_csv_html_deterministic(db: Path, tmp_path: Path) -> None:
    today = CUTOVER.date_of(time.time_ns() // 1000).isoformat()
    week_ago = (dt.date.fromisoformat(today) - dt.timedelta(days=7)).isoformat()
    args = ("institution", "h1", "--from", week_ago, "--to", today, "--db", str(db))
    run(tmp_path, *args, "--out", str(tmp_path / "one"))
    run(tmp_path, *args, "--out", str(tmp_path / "two"))
    stem = f"institution_h1_{week_ago}_{today}"
    for suffix in (".csv", ".html"):
        first = (tmp_path / "one" / (stem + suffix)).read_bytes()
        assert first == (tmp_path / "two" / (stem + suffix)).read_bytes()
        assert b"6212340000000019" not in first
    text = (tmp_path / "one" / (stem + ".csv")).read_text(encoding="utf-8")
    assert "statement,institution,h1,第1医院" in text
    assert "insurance,card debits,2," in text and "EP,card debits,1,8.00" in text
    assert "insurance,voids: personal account share back,1,-50.00" in text
    assert f"{today},EP,8.00,0.00" in text and f"{today},insurance,548.00,0.00" in text
    # the bill with a pooled share, by class: 甲 within the deductible, 乙 above it
    assert "employed,乙,1,300.00,48.00,52.00" in text and "employed,甲,1,200.00,0.00" in text
    assert "insurance,548.00" in text  # the payable at the end
    html = (tmp_path / "one" / (stem + ".html")).read_text(encoding="utf-8")
    assert "<h2>Payouts</h2>" in html and "第1医院" in html


def test_unit_statement(db: Path, tmp_path: Path) -> None:
    today = CUTOVER.date_of(time.time_ns() // 1000).isoformat()
    run(
        tmp_path,
        "unit",
        "u2",
        "--from",
        today,
        "--to",
        today,
        "--db",
        str(db),
        "--out",
        str(tmp_path),
    )
    text = (tmp_path / f"unit_u2_{today}_{today}.csv").read_text(encoding="utf-8")
    assert "2026-11,1,30.00,70.00,100.00" in text
    assert f"{today},statement|b1:20261125F00001|0,100.00" in text
    assert "ED,hospital,2," in text and "EP,hospital,1,8.00" in text
    # the bill with a pooled share, by class (the other one's shares are its card debits)
    assert "employed,甲,1,200.00,0.00,0.00" in text and "employed,乙,1,300.00,48.00,52.00" in text


def test_refusals(db: Path, tmp_path: Path) -> None:
    out = run(
        tmp_path,
        "institution",
        "u1",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--db",
        str(db),
        ok=False,
    ).output
    assert "no hospital or pharmacy u1" in out
    out = run(
        tmp_path,
        "unit",
        "u1",
        "--from",
        "2026-11-05",
        "--to",
        "2026-11-02",
        "--db",
        str(db),
        ok=False,
    ).output
    assert "before it starts" in out
    out = run(
        tmp_path,
        "unit",
        "u1",
        "--from",
        "2026-13-01",
        "--to",
        "2026-11-02",
        "--db",
        str(db),
        ok=False,
    ).output
    assert "not a date" in out

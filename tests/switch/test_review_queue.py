"""The review queue through `medswitch review ...` on a temp demo database: list (yuan, masked card
numbers), show, accept, reject, adjust with maker-checker (same operator refused, allowed pairs
only, a ledger refusal declines it), invalid transitions refused with a non-zero exit, every
action in the audit log, the sweep of loads in doubt past their age; the ledger sums to zero."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.core import ReviewItem
from ledger.demo import init_demo
from ledger.events import Purse, load, post_into_doubt
from ledger.sqlite_ledger import SqliteLedger
from switch.cli import main
from tests.support.operators import NamedOperators
from tests.support.personal import demo_keys

PAN = "6212340000000019"  # Luhn-valid


def _add_items(db: Path) -> None:
    async def run() -> None:
        ledger = SqliteLedger.open(db)
        try:
            await ledger.add_review(ReviewItem("a" * 32, "bad_tac", f"card {PAN} psam 1", 1234))
            await ledger.add_review(ReviewItem("b" * 32, "counter_gap", "psam 000000000001", 0))
            await ledger.add_review(ReviewItem("c" * 32, "shadow_below_zero", "ed:31", 500, "x"))
        finally:
            await ledger.close()

    asyncio.run(run())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "demo.db"
    init_demo(path, 6, personal=demo_keys(path.parent))
    _add_items(path)
    return path


def run(db: Path, *args: str, ok: bool = True) -> Result:
    """`medswitch review ARGS` as the operator ``--operator NAME`` names (enrolled on first
    use on this database)."""
    operators = NamedOperators(db, db.parent / "operator-tokens")
    result = CliRunner().invoke(main, ["review", *args, "--db", str(db)], env=operators.env(args))
    assert (result.exit_code == 0) is ok, result.output
    return result


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


def sums(db: Path) -> tuple[int, int]:
    ((debits, credits),) = rows(db, "SELECT SUM(debits_posted), SUM(credits_posted) FROM accounts")
    return int(str(debits)), int(str(credits))


def balance(db: Path, account: str) -> int:
    found = rows(db, f"SELECT credits_posted - debits_posted FROM accounts WHERE id = '{account}'")
    return int(str(found[0][0]))


def test_list_masks_card_numbers_and_shows_yuan(db: Path) -> None:
    out = run(db, "list").output
    assert "621234******0019" in out and PAN not in out
    assert "12.34" in out and "3 item(s)" in out
    assert "1 item(s)" in run(db, "list", "--reason", "counter_gap").output
    assert "0 item(s)" in run(db, "list", "--status", "accepted").output


def test_accept_and_reject_are_final_and_audited(db: Path) -> None:
    assert (
        "accepted by alice"
        in run(db, "accept", "aaaaaa", "--operator", "alice", "--note", "card says so").output
    )
    refused = run(db, "reject", "aaaaaa", "--operator", "bob", ok=False).output
    assert "refused" in refused and "accepted" in refused
    run(db, "reject", "#2", "--operator", "bob", "--note", "forged")
    assert rows(db, "SELECT status, resolved_by FROM review_items ORDER BY seq")[:2] == [
        ("accepted", "alice"),
        ("rejected", "bob"),
    ]
    audit = rows(
        db, "SELECT actor, action, subject FROM audit_log WHERE action LIKE 'review.%' ORDER BY seq"
    )
    assert audit == [("alice", "review.accept", "a" * 32), ("bob", "review.reject", "b" * 32)]
    shown = run(db, "show", "aaaaaa").output
    assert "review.accept" in shown and "card says so" in shown and PAN not in shown
    assert "accepted" in run(db, "list", "--status", "accepted").output
    assert "no review item" in run(db, "show", "dddddd", ok=False).output
    assert "6+ hex" in run(db, "show", "zz", ok=False).output


def test_adjustment_needs_a_second_operator(db: Path) -> None:
    before_h1, before_pool, zero = balance(db, "payins:h1"), balance(db, "pool:centre"), sums(db)
    out = run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "pool:centre",
        "--credit",
        "payins:h1",
        "--amount",
        "5.00",
        "--operator",
        "alice",
        "--note",
        "pooled share missed",
    ).output
    assert "adjustment 1 pending" in out
    assert rows(db, "SELECT status FROM review_items WHERE seq = 3") == [("adjusting",)]
    same = run(db, "approve-adjustment", "1", "--operator", "alice", ok=False).output
    assert "different operator" in same
    assert balance(db, "payins:h1") == before_h1  # nothing moved
    refused = run(db, "accept", "cccccc", "--operator", "xavier", ok=False).output
    assert "accept needs it open" in refused
    run(db, "approve-adjustment", "1", "--operator", "bob")
    assert balance(db, "payins:h1") == before_h1 + 500
    assert balance(db, "pool:centre") == before_pool - 500
    again = run(db, "approve-adjustment", "1", "--operator", "bob", ok=False).output
    assert "approved, not pending" in again
    assert balance(db, "payins:h1") == before_h1 + 500  # posted once
    assert rows(db, "SELECT status, resolved_by FROM review_items WHERE seq = 3") == [
        ("adjusted", "bob")
    ]
    assert rows(db, "SELECT made_by, approved_by, status FROM approvals") == [
        ("alice", "bob", "approved")
    ]
    actions = [
        r[0]
        for r in rows(
            db, "SELECT action FROM audit_log WHERE action NOT LIKE 'operators.%' ORDER BY seq"
        )
    ]
    assert actions == ["review.adjust", "review.approve-refused", "review.approve-adjustment"]
    debits, credits = sums(db)
    assert debits == credits and debits == zero[0] + 500


def test_adjustments_only_between_allowed_pairs(db: Path) -> None:
    crossing = run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "pool:centre",
        "--credit",
        "payep:h1",
        "--amount",
        "1",
        "--operator",
        "alice",
        ok=False,
    ).output
    assert "not an allowed transfer" in crossing
    missing = run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "pool:centre",
        "--credit",
        "payins:zz",
        "--amount",
        "1",
        "--operator",
        "alice",
        ok=False,
    ).output
    assert "no account payins:zz" in missing
    bad = run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "pool:centre",
        "--credit",
        "payins:h1",
        "--amount",
        "1.234",
        "--operator",
        "alice",
        ok=False,
    ).output
    assert "2 decimals" in bad
    assert rows(db, "SELECT COUNT(*) FROM approvals") == [(0,)]
    assert rows(db, "SELECT status FROM review_items WHERE seq = 3") == [("open",)]


def test_a_refused_adjustment_is_declined_and_the_item_reopens(db: Path) -> None:
    # the personal fund is never negative: taking more than it holds is refused by the ledger
    held = balance(db, "pf:0000000001")
    amount = f"{(held + 100) / 100:.2f}"
    run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "pf:0000000001",
        "--credit",
        "edload:x",
        "--amount",
        amount,
        "--operator",
        "alice",
        ok=False,
    )  # no such account
    run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "pf:0000000001",
        "--credit",
        "edload:3100000000000001",
        "--amount",
        amount,
        "--operator",
        "alice",
    )
    refused = run(db, "approve-adjustment", "1", "--operator", "bob", ok=False).output
    assert "INSUFFICIENT_FUNDS" in refused
    assert rows(db, "SELECT status FROM approvals") == [("rejected",)]
    assert rows(db, "SELECT status FROM review_items WHERE seq = 3") == [("open",)]
    run(
        db,
        "adjust",
        "cccccc",
        "--debit",
        "payins:h1",
        "--credit",
        "pool:centre",
        "--amount",
        "0.01",
        "--operator",
        "carol",
    )
    run(db, "decline-adjustment", "2", "--operator", "dave", "--note", "no")
    assert rows(db, "SELECT status FROM review_items WHERE seq = 3") == [("open",)]
    assert balance(db, "pf:0000000001") == held
    debits, credits = sums(db)
    assert debits == credits


def test_sweep_puts_old_loads_in_doubt_into_review_once(db: Path) -> None:
    async def into_doubt() -> None:
        ledger = SqliteLedger.open(db)
        try:
            for counter, amount in ((7, 1000), (8, 2000)):
                attempt = load(
                    f"K0000001|1|{counter}|0200",
                    f"{counter:08X}",
                    "3100000000000001",
                    Purse.ED,
                    counter,
                    amount,
                    "0000000001",
                )
                assert (await post_into_doubt(ledger, attempt)).ok
        finally:
            await ledger.close()

    asyncio.run(into_doubt())
    early = run(db, "sweep", "--now", "2000-01-01T00:00:00Z", "--operator", "alice").output
    assert "0 in doubt" in early
    refused = run(db, "sweep", "--now", "2100-01-01T00:00:00+08:00", ok=False).output
    assert "reader lacks the role maker" in refused  # an auditor reads, a maker sweeps
    later = run(db, "sweep", "--now", "2100-01-01T00:00:00+08:00", "--age", "2h",
                "--operator", "alice").output
    assert "2 in doubt" in later and "2 new review item(s); swept by alice" in later
    again = run(db, "sweep", "--now", "2100-01-01T00:00:00+08:00", "--age", "2h",
                "--operator", "bob").output
    assert "0 new review item(s)" in again
    out = run(db, "list", "--reason", "load_in_doubt_aged").output  # by the auditor
    assert "10.00" in out and "20.00" in out and "2 item(s)" in out
    assert "time zone" in run(db, "sweep", "--now", "2100-01-01T00:00:00", "--operator",
                              "alice", ok=False).output
    with sqlite3.connect(db) as sql:  # who swept, for what age, with what result
        swept = sql.execute("SELECT actor, detail FROM audit_log WHERE action = 'review.sweep' "
                            "ORDER BY seq").fetchall()
    assert [(who, json.loads(d)["added"]) for who, d in swept] == [
        ("alice", 0), ("alice", 2), ("bob", 0)]
    assert json.loads(swept[1][1])["age_s"] == 7200


def test_an_item_is_named_as_the_list_shows_it(db: Path) -> None:
    """`review list` shows #N; `review show` takes it as listed, or without the #."""
    listed = run(db, "list").output.splitlines()
    numbers = re.findall(r"^\s*(#\d+)\s", "\n".join(listed), re.MULTILINE)
    assert numbers == ["#1", "#2", "#3"], listed
    for ref in ("#2", "2"):
        shown = run(db, "show", ref).output
        assert shown.startswith("item #2 " + "b" * 32), shown
    assert "created    20" in shown and "Z" in shown  # a clock time, not microseconds
    assert "no review item 9" in run(db, "show", "9", ok=False).output

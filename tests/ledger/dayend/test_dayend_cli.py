"""Day-end through the CLI over a demo deployment whose day the test posts itself (ED and EP card
debits, a bill's pooled share, a void with an EP refund, EP loads from a bank), mirrored into the
in-memory reference ledger: payouts equal the model's payables and the test's own sums; the maker
cannot approve; unapproved files are never released; a second run writes identical bytes and
posts nothing; a tampered file fails `dayend verify`; the ledger sums to zero."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger.dayend import payout_file as pf
from switch.cli import main
from tests.support.dayend import Cli, cards_of, post_both, today_and_after
from tests.support.operators import as_operator


def test_dayend_pays_what_the_model_owes_under_maker_checker(cli: Cli) -> None:
    cards = cards_of(cli.db, 4)
    model = asyncio.run(post_both(cli.db, cards))
    date, after = today_and_after()
    cli.invoke("dayend", "run", "--date", date, "--db", str(cli.db), "--keys-home",
               str(cli.keys_home), *cli.components, "--out", str(cli.out), "--operator", "alice",
               ok=False)  # now: the date has not closed
    before = cli.sums()
    out = cli.run(date, after).output
    assert "prepared: awaiting approval" in out and "held payins:nobody 0.99 yuan" in out
    compact = date.replace("-", "")
    staging = cli.out / "staging" / compact
    names = sorted(p.name for p in staging.iterdir())
    assert names == [f"PAYOUT_{compact}_b1_INS.txt", f"PAYOUT_{compact}_b2_EP.txt",
                     f"PAYOUT_{compact}_b2_INS.txt", f"REFUND_{compact}_b1_EP.enc"]
    assert not (cli.out / "outbox").exists()  # nothing released before approval
    assert cli.sums() == before  # nothing posted before approval

    # The files' lines are the model's payables, and the test's own sums.
    payables = {b.account_id: b.balance_fen for b in asyncio.run(model.all_balances())
                if b.account_id.split(":")[0] in ("payins", "payep", "refund")}
    expected = {"payins:h1": 1_000 + 1_001 + 2_500, "payins:h2": 1_002, "payins:p1": 1_003,
                "payep:h2": 800 - 300, f"refund:{cards[0].holder}": 300, "payins:nobody": 99}
    assert {a: v for a, v in payables.items() if v} == expected
    paid = _lines(cli, staging)
    assert paid == {a: v for a, v in expected.items() if a != "payins:nobody"}

    first = cli.tree()
    again = cli.run(date, after).output
    assert "unchanged" in again and cli.tree() == first and cli.sums() == before

    refused = cli.approve(date, "alice", ok=False).output
    assert "cannot also approve" in refused and not (cli.out / "outbox").exists()
    # Maker-checker compares authenticated operators: alice logged in is alice, whatever
    # name she types, and without a login nobody approves.
    approve = ["dayend", "approve", "--date", date, "--db", str(cli.db), "--out", str(cli.out)]
    as_alice = as_operator(cli.operators.token("alice"))
    typed = cli.runner.invoke(main, [*approve, "--operator", "bob"], env=as_alice)
    assert typed.exit_code == 1 and "not the authenticated operator (alice)" in typed.output
    untyped = cli.runner.invoke(main, approve, env=as_alice)
    assert untyped.exit_code == 1 and "cannot also approve" in untyped.output
    assert "no operator logged in" in cli.approve(date, " ", ok=False).output
    approved = cli.approve(date, "bob").output
    assert "5 payouts posted" in approved
    assert sorted(p.name for p in (cli.out / "outbox").iterdir()) == names
    debits, credits = cli.sums()
    assert debits == credits
    after_payouts = {a: v for a, v in _balances(cli).items() if a.split(":")[0] in
                     ("payins", "payep", "refund")}
    assert {a: v for a, v in after_payouts.items() if v} == {"payins:nobody": 99}
    assert _balances(cli)["payoutins:centre"] == 1_000 + 1_001 + 2_500 + 1_002 + 1_003
    assert _balances(cli)["payoutep:centre"] == 800

    # After approval: a second run writes the same bytes and posts nothing.
    sums = cli.sums()
    tree = cli.tree()
    assert "unchanged" in cli.run(date, after).output
    assert cli.tree() == tree and cli.sums() == sums
    assert "approve" in cli.approve(date, "carol", ok=False).output  # already approved
    status = cli.status(date).output
    assert "approved: run by alice (3 runs), approved by bob" in status
    audit = cli.rows("SELECT actor, action FROM audit_log WHERE action LIKE 'dayend.%' "
                     "ORDER BY seq")
    assert audit == [("alice", "dayend.run"), ("alice", "dayend.rerun"), ("bob", "dayend.approve"),
                     ("alice", "dayend.rerun")]


def _lines(cli: Cli, staging: Path) -> dict[str, int]:
    found = {}
    for path in sorted(staging.iterdir()):
        out = cli.verify(path).output
        assert ": OK " in out
        data = path.read_bytes()
        if pf.is_plain(data):
            f, _, _ = pf.split(data)
            prefix = "payins" if f.source == pf.INSURANCE else "payep"
            found.update({f"{prefix}:{x.payee_id}": x.amount_fen for x in f.lines})
        else:
            assert b"REFUND" not in data  # encrypted
            found["refund:" + out.split()[0]] = 0
    refund = [k for k in found if k.startswith("refund:")]
    for key in refund:
        del found[key]
    rows = cli.rows("SELECT cardholder_id, amount_fen FROM payouts WHERE kind = 'refund'")
    found.update({f"refund:{holder}": int(str(amount)) for holder, amount in rows})
    return found


def _balances(cli: Cli) -> dict[str, int]:
    rows = cli.rows("SELECT id, kind, debits_posted, credits_posted FROM accounts")
    debit_normal = {"fundbank", "contrib", "epfloat", "clearing"}
    return {str(i): (int(str(d)) - int(str(c))) if k in debit_normal else int(str(c)) - int(str(d))
            for i, k, d, c in rows}


def test_a_tampered_payout_file_fails_verify(cli: Cli) -> None:
    asyncio.run(post_both(cli.db, cards_of(cli.db, 4)))
    date, after = today_and_after()
    cli.run(date, after)
    staging = cli.out / "staging" / date.replace("-", "")
    path = next(p for p in staging.iterdir() if p.name.startswith("PAYOUT_"))
    data = path.read_bytes()
    at = data.index(b"\n") + 1 + 100  # inside the first payment's account number
    path.write_bytes(data[:at] + (b"9" if data[at:at + 1] != b"9" else b"8") + data[at + 1:])
    out = cli.verify(path, ok=False).output
    assert "REFUSED" in out and "MAC" in out
    refused = cli.approve(date, "bob", ok=False).output  # nor is a tampered file released
    assert "differs from what was prepared" in refused
    assert not (cli.out / "outbox").exists()

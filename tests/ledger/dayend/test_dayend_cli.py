"""Day-end through the CLI over a demo deployment whose day the test posts itself (ED and EP card
debits, a bill's pooled share, a void with an EP refund, EP loads from a bank), mirrored into the
in-memory reference ledger: payouts equal the model's payables and the test's own sums; the maker
cannot approve; unapproved files are never released; a second run writes identical bytes and
posts nothing; a tampered file fails `dayend verify`; the ledger sums to zero."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import events as ev
from ledger.core import Ledger
from ledger.dayend import payout_file as pf
from ledger.demo import init_demo
from ledger.memory import MemoryLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.ledger.dayend.support import Cli, make_keys, today_and_after


@dataclass(frozen=True)
class Card:
    card_no: str
    serial: str
    holder: str


def _cards(db: Path, count: int) -> list[Card]:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT card_no, application_serial, cardholder_id FROM cards "
                         "ORDER BY card_no LIMIT ?", (count,)).fetchall()
    return [Card(*row) for row in rows]


async def _day(ledger: Ledger, cards: list[Card]) -> None:
    """The day's business events (the same on both ledgers)."""
    e = ev.Purse.ED
    for n, (card, institution) in enumerate(zip(cards, ("h1", "h1", "h2", "p1"), strict=True)):
        await ev.post_card_debit(ledger, ev.CardDebit("PSAM01", n + 1, card.serial, e,
                                                      1_000 + n, institution, institution))
    for n, card in enumerate(cards[:2]):
        attempt = ev.load(f"kiosk|{n}", "00", card.serial, ev.Purse.EP, 1, 5_000, "b1")
        assert (await ev.post_into_doubt(ledger, attempt)).ok
        assert (await ev.resolve_attempt(ledger, attempt, happened=True)).ok
    await ev.post_card_debit(ledger, ev.CardDebit("PSAM02", 1, cards[0].serial, ev.Purse.EP,
                                                  800, "h2", "h2"))
    await ev.post_bill_completion(ledger, ev.BillCompletion("B2", "h1", 2_500))
    await ev.post_void(ledger, ev.Void("B1", "h2", cards[0].holder, 0, 0, 300))
    # A payable with no settlement account on file is held, never paid.
    await ev.post_card_debit(ledger, ev.CardDebit("PSAM09", 1, cards[3].serial, e, 99, "nobody",
                                                  "nobody"))


async def _post_both(db: Path, cards: list[Card]) -> MemoryLedger:
    model = MemoryLedger()
    await model.open_accounts(ev.centre_accounts() + ev.bank_accounts("b1"))
    ledger = SqliteLedger.open(db)
    try:
        for target in (ledger, model):
            await _day(target, cards)
    finally:
        await ledger.close()
    return model


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    db = tmp_path / "medswitch.db"
    init_demo(db, 8)
    home, components = make_keys(tmp_path)
    return Cli(db, home, components, tmp_path / "dayend", CliRunner())


def test_dayend_pays_what_the_model_owes_under_maker_checker(cli: Cli) -> None:
    cards = _cards(cli.db, 4)
    model = asyncio.run(_post_both(cli.db, cards))
    date, after = today_and_after()
    cli.invoke("dayend", "run", "--date", date, "--db", str(cli.db), "--keys-home",
               str(cli.keys_home), *cli.components, "--out", str(cli.out), "--operator", "alice",
               ok=False)  # now: the date has not closed
    before = cli.sums()
    out = cli.run(date, after).output
    assert "prepared: awaiting approval" in out and "held payins:nobody 99" in out
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
    asyncio.run(_post_both(cli.db, _cards(cli.db, 4)))
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

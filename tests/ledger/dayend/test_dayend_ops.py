"""Day-end operations through the CLI: the cut-over filters what a date sees, an earlier date's
unapproved payouts hold the next date back, a failed run stores nothing and a rerun completes,
an approval that crashed after posting resumes without posting twice, reject and rerun, clear
refusals; and the transfer a payout posts is the one `ledger.events.post_payout` would post."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import events as ev
from ledger.core import OfflineRecord, TransferResult
from ledger.dayend import store
from ledger.dayend.plan import Payout
from ledger.memory import MemoryLedger
from ledger.sqlite_ledger import SqliteLedger
from switch.cli import main
from tests.support.dayend import CUTOVER, Cli, cards_of, post_both, today_and_after


def _prepared(cli: Cli) -> tuple[str, str]:
    asyncio.run(post_both(cli.db, cards_of(cli.db, 4)))
    date, after = today_and_after()
    assert "prepared" in cli.run(date, after).output
    return date, after


def test_the_cutover_decides_what_a_date_sees(cli: Cli) -> None:
    asyncio.run(post_both(cli.db, cards_of(cli.db, 4)))
    today, _ = today_and_after()
    yesterday = dt.date.fromisoformat(today) - dt.timedelta(days=1)
    after = (CUTOVER.instant(yesterday) + dt.timedelta(hours=1)).isoformat()
    out = cli.run(yesterday.isoformat(), after).output  # everything posted after its cut-over
    assert "closed: nothing to pay" in out and "0 transfers cleared" in out
    report = (cli.out / "reports" / f"CLEARING_{yesterday:%Y%m%d}.csv").read_text()
    assert "institution," not in report and "payable," not in report


def test_an_unapproved_earlier_date_holds_the_next_back(cli: Cli) -> None:
    date, _ = _prepared(cli)
    tomorrow = dt.date.fromisoformat(date) + dt.timedelta(days=1)
    later = (CUTOVER.instant(tomorrow) + dt.timedelta(minutes=5)).isoformat()
    out = cli.run(tomorrow.isoformat(), later, ok=False).output
    assert f"the payouts of {date} await approval" in out
    cli.approve(date, "bob")
    assert "closed: nothing to pay" in cli.run(tomorrow.isoformat(), later).output


def test_a_failed_run_stores_nothing_and_a_rerun_completes(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(post_both(cli.db, cards_of(cli.db, 4)))
    date, after = today_and_after()
    monkeypatch.setenv("MEDSWITCH_DAYEND_FILE_KEY_ALIAS", "bank/{bank}/FILE-missing")
    out = cli.run(date, after, ok=False).output
    assert "no file key bank/b1/FILE-missing for bank b1" in out
    assert cli.rows("SELECT * FROM business_days") == []
    assert cli.rows("SELECT * FROM payouts") == [] and not (cli.out / "outbox").exists()
    monkeypatch.delenv("MEDSWITCH_DAYEND_FILE_KEY_ALIAS")
    assert "prepared" in cli.run(date, after).output
    assert len(cli.rows("SELECT * FROM payouts")) == 5


def test_an_approval_that_crashed_after_posting_resumes(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    date, _ = _prepared(cli)
    real = store.mark_approved

    def crash(*args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(store, "mark_approved", crash)
    args = ["dayend", "approve", "--date", date, "--db", str(cli.db), "--out", str(cli.out),
            "--operator", "bob"]
    result = CliRunner().invoke(main, args, env=cli.operators.env(args))
    assert isinstance(result.exception, RuntimeError)
    posted = cli.sums()
    assert cli.rows("SELECT status FROM business_days") == [("prepared",)]
    monkeypatch.setattr(store, "mark_approved", real)
    out = cli.approve(date, "bob").output
    assert "0 payouts posted, 5 already posted" in out
    assert cli.sums() == posted
    assert set(cli.rows("SELECT status FROM payouts")) == {("released",)}


def test_reject_then_run_again_then_approve(cli: Cli) -> None:
    date, after = _prepared(cli)
    reject = ["dayend", "reject", "--date", date, "--db", str(cli.db), "--reason", "check h1"]
    assert "a second operator rejects" in cli.invoke(*reject, "--operator", "alice",
                                                     ok=False).output
    assert "rejected by bob" in cli.invoke(*reject, "--operator", "bob").output
    assert "nothing to approve" in cli.approve(date, "bob", ok=False).output
    assert "prepared" in cli.run(date, after).output
    statuses = cli.rows("SELECT status, made_by, approved_by FROM approvals ORDER BY id")
    assert statuses == [("rejected", "alice", "bob"), ("pending", "alice", None)]
    assert "5 payouts posted" in cli.approve(date, "carol").output


def test_clear_refusals(cli: Cli, tmp_path: Path) -> None:
    date, _ = today_and_after()
    assert "no day-end run" in cli.approve(date, "bob", ok=False).output
    assert "no day-end run" in cli.invoke("dayend", "status", "--date", date, "--db",
                                          str(cli.db), ok=False).output
    assert "not a date" in cli.invoke("dayend", "status", "--date", "2026-02-30", "--db",
                                      str(cli.db), ok=False).output
    junk = tmp_path / "PAYOUT_20261125_b1_INS.txt"
    junk.write_bytes(b"H" * 300)
    assert "REFUSED" in cli.verify(junk, ok=False).output
    nowhere = tmp_path / "nowhere.db"
    assert "does not exist" in cli.invoke("dayend", "status", "--date", date, "--db",
                                          str(nowhere), ok=False).output


def test_a_payouts_transfer_is_the_one_post_payout_posts() -> None:
    async def body() -> None:
        ledger = MemoryLedger()
        await ledger.open_accounts(ev.centre_accounts())
        debit = ev.CardDebit("PSAM01", 1, "3100000000000001", ev.Purse.EP, 700, "h1", "h1")
        assert (await ev.post_card_debit(ledger, debit)).ok
        payout = Payout("20261125-E-h1", "payep:h1", "ep", "institution", "h1", "b1", "62",
                        "H", 700)
        order = ev.PayoutOrder(payout.payout_id, "payep:h1", 700, "alice", "bob")
        assert (await ev.post_payout(ledger, order)).ok
        assert await ledger.post([payout.transfer]) == [TransferResult.EXISTS]
        assert (await ev.resolve_payout(ledger, payout.payout_id, paid=True)).ok
        assert (await ledger.balance("epfloat:centre")).balance_fen == -700  # type: ignore[union-attr]

    asyncio.run(body())


def test_loads_in_doubt_with_their_age_and_late_uploads_are_reported(cli: Cli) -> None:
    cards = cards_of(cli.db, 6)
    asyncio.run(post_both(cli.db, cards[:4]))
    date, after = today_and_after()
    card_day = (dt.date.fromisoformat(date) - dt.timedelta(days=3)).strftime("%Y%m%d")

    async def more() -> None:
        ledger = SqliteLedger.open(cli.db)
        try:
            attempt = ev.load("kiosk|late", "01", cards[5].serial, ev.Purse.ED, 1, 1_500,
                              cards[5].holder)
            assert (await ev.post_into_doubt(ledger, attempt)).ok  # its confirmation never came
            record = OfflineRecord("PSAM01", 1, "P0000001", 1, cards[0].serial, "ED", 1_000,
                                   "00000000", card_day + "101500", "t1")
            assert await ledger.record_offline([record]) == [True]
        finally:
            await ledger.close()

    asyncio.run(more())
    cli.run(date, after)
    report = (cli.out / "reports" / f"CLEARING_{date.replace('-', '')}.csv").read_text()
    rows = [line.split(",") for line in report.splitlines()]
    doubt = [r for r in rows if r[0] == "in_doubt"]
    assert len(doubt) == 1 and doubt[0][1] == f"edload:{cards[5].serial}"
    assert doubt[0][5] == "1500" and int(doubt[0][3]) > 0  # age in seconds at the cut-over
    assert ["late_uploads", "", "offline_records", "card_date_before_window", "1", "1000"] in rows
    assert ["loads", "ED", "loads_into_doubt", "", "1", "1500"] in rows


def test_an_earlier_date_cannot_be_prepared_after_a_later_one(cli: Cli) -> None:
    date, after = _prepared(cli)
    reject = ["dayend", "reject", "--date", date, "--db", str(cli.db), "--reason", "redo"]
    cli.invoke(*reject, "--operator", "bob")
    tomorrow = dt.date.fromisoformat(date) + dt.timedelta(days=1)
    later = (CUTOVER.instant(tomorrow) + dt.timedelta(minutes=5)).isoformat()
    assert "prepared" in cli.run(tomorrow.isoformat(), later).output  # pays the rejected date too
    out = cli.run(date, after, ok=False).output
    assert "an earlier date cannot be prepared after a later one" in out
    assert "5 payouts posted" in cli.approve(tomorrow.isoformat(), "bob").output


def test_an_approved_date_whose_ledger_changed_is_neither_rewritten_nor_restored(cli: Cli) -> None:
    date, after = _prepared(cli)
    cli.approve(date, "bob")
    tree = cli.tree()
    card = cards_of(cli.db, 1)[0]

    async def late_debit() -> None:  # stamped before the date's cut-over (the test's clock)
        ledger = SqliteLedger.open(cli.db)
        try:
            debit = ev.CardDebit("PSAM07", 1, card.serial, ev.Purse.ED, 50, "h1", "h1")
            assert (await ev.post_card_debit(ledger, debit)).ok
        finally:
            await ledger.close()

    asyncio.run(late_debit())
    out = cli.run(date, after, ok=False).output
    assert "computes other files" in out and "nothing written or stored" in out
    assert cli.tree() == tree
    assert cli.rows("SELECT status, runs FROM business_days") == [("approved", 1)]

"""Bank reconciliation through the CLI: a day of business, `dayend run/approve` (the maker and the
checker), the bank simulator's return file with one payment returned (`sim bank-files returns`),
`dayend import-returns` — paid payments settle the fund bank account, the returned one goes back
to the payable and into review, and the next day's payout re-issues it (the returned payout then
says ``reissued``); the bank's statements (`sim bank-files statement`, `dayend
import-statement`) post contributions received and savings debits settled, match the payouts
paid, and put an unexpected line into review. Importing any file twice changes nothing; a tampered
or other-key file is refused whole; the ledger sums to zero and passes the invariants."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import events as ev
from ledger.core import Transfer
from ledger.demo import init_demo
from ledger.sqlite_ledger import SqliteLedger
from tests.support.dayend import CUTOVER, Cli, make_keys, personal_of, today_and_after
from tests.support.invariants import check_invariants

OURS = "WHERE reason IN ('payout_returned', 'bank_unmatched')"  # (card debits add others)
TABLES = ("accounts", "transfers", "payouts", "review_items", "bank_statement_lines", "approvals")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    db = tmp_path / "medswitch.db"
    home, components = make_keys(tmp_path)
    init_demo(db, 6, personal=personal_of(home, components))
    return Cli(db, home, components, tmp_path / "dayend", CliRunner())


async def _day(db: Path) -> None:
    """h1 and p1 are paid through b1, h2 through b2; the EP loads are savings debits at b1; u2
    owes a contribution."""
    ledger = SqliteLedger.open(db)
    try:
        serials = [f"3100{n:012d}" for n in range(1, 5)]
        for n, (serial, institution) in enumerate(
            zip(serials, ("h1", "h1", "h2", "p1"), strict=True)
        ):
            debit = ev.CardDebit(
                "PSAM01", n + 1, serial, ev.Purse.ED, 10_000 + n, institution, institution
            )
            assert (await ev.post_card_debit(ledger, debit)).ok
        for n, serial in enumerate(serials[:2]):
            attempt = ev.load(f"kiosk|{n}", "00", serial, ev.Purse.EP, 1, 5_000, "b1")
            assert (await ev.post_into_doubt(ledger, attempt)).ok
            assert (await ev.resolve_attempt(ledger, attempt, happened=True)).ok
        line = ev.ContributionLine("u2", "2026-11", "0000000001", 3_000, 7_000)
        assert (await ev.post_contribution(ledger, line)).ok
    finally:
        await ledger.close()


def _snapshot(cli: Cli) -> dict[str, list[tuple[object, ...]]]:
    return {t: sorted(cli.rows(f"SELECT * FROM {t}"), key=repr) for t in TABLES}


def _balance(cli: Cli, account: str) -> int:
    rows = cli.rows(f"SELECT debits_posted - credits_posted FROM accounts WHERE id = '{account}'")
    return int(str(rows[0][0])) if rows else 0


def _bank(cli: Cli, *args: str) -> str:
    common = ("--home", str(cli.keys_home), *cli.components, "--out", str(cli.out / "bank"))
    return cli.invoke("sim", "bank-files", *args, *common).output


def _import(cli: Cli, what: str, path: Path, ok: bool = True) -> str:
    args = ("--db", str(cli.db), "--keys-home", str(cli.keys_home), *cli.components)
    return cli.invoke("dayend", what, str(path), *args, "--operator", "carol", ok=ok).output


def _invariants(cli: Cli) -> None:
    rows = cli.rows(
        "SELECT id, debit_account_id, credit_account_id, amount_fen, code, reference"
        " FROM transfers WHERE result = 0"
    )
    posted = [Transfer(*row) for row in rows]  # type: ignore[arg-type]

    async def check() -> None:
        ledger = SqliteLedger.open(cli.db)
        try:
            await check_invariants(ledger, posted)
        finally:
            await ledger.close()

    asyncio.run(check())


def test_returned_payment_is_reviewed_and_reissued_statements_match(cli: Cli) -> None:
    asyncio.run(_day(cli.db))
    date, after = today_and_after()
    compact = date.replace("-", "")
    cli.run(date, after)
    cli.approve(date, "bob")
    outbox = cli.out / "outbox"
    b1_ins = outbox / f"PAYOUT_{compact}_b1_INS.txt"
    assert b1_ins.exists()
    in_flight = _balance(cli, "payoutins:centre")
    assert in_flight == -(10_000 + 10_001 + 10_002 + 10_003)  # a credit balance: owed out

    # The bank pays p1 and returns h1's payment (wrong account number).
    next_day = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
    out = _bank(cli, "returns", str(b1_ins), "--date", next_day, "--return", "h1:R002:no such a/c")
    assert "2 payments, 1 returned" in out
    returned_file = next((cli.out / "bank").glob("RETURN_PAYOUT_*_b1_INS_*.txt"))
    fund_before = _balance(cli, "fundbank:centre")
    out = _import(cli, "import-returns", returned_file)
    assert "1 paid, 1 returned now, 0 already answered" in out and "R002" in out
    assert _balance(cli, "fundbank:centre") == fund_before - 10_003  # p1 paid from the fund
    assert _balance(cli, "payins:h1") == -(10_000 + 10_001)  # back to h1's payable
    h1 = f"{compact}-I-h1"
    assert cli.rows(f"SELECT status, reason FROM payouts WHERE id = '{h1}'") == [
        ("returned", "R002 no such a/c")
    ]
    assert cli.rows(f"SELECT status FROM payouts WHERE id = '{compact}-I-p1'") == [("paid",)]
    review = cli.rows(f"SELECT reason, amount_fen, status FROM review_items {OURS}")
    assert review == [("payout_returned", 20_001, "open")]

    # The same file again changes nothing; a tampered one, or one under another key, is refused.
    before = _snapshot(cli)
    assert "0 paid, 0 returned now, 2 already answered" in _import(
        cli, "import-returns", returned_file
    )
    data = returned_file.read_bytes()
    tampered = cli.out / "tampered.txt"
    assert b"no such a/c" in data
    tampered.write_bytes(data.replace(b"no such a/c", b"no such a/d"))
    assert "REFUSED" in _import(cli, "import-returns", tampered, ok=False)
    tampered.write_bytes(data[:-1])
    assert "line break" in _import(cli, "import-returns", tampered, ok=False)
    tampered.write_bytes(b"H" + bytes([0x80]) + data[2:])
    assert "not a return file" in _import(cli, "import-returns", tampered, ok=False)
    tampered.write_bytes(data[:200] + bytes([0x81, 0x20]) + data[202:])  # not GB18030 text
    assert "REFUSED" in _import(cli, "import-returns", tampered, ok=False)
    other_key = _import_with_key(cli, returned_file, "bank/b2/FILE")
    assert "REFUSED" in other_key and "MAC" in other_key
    assert _snapshot(cli) == before

    # The next day-end re-issues h1's payment (after the account is corrected).
    out = cli.invoke("dayend", "settlement-account", "h1", "--bank", "b1", "--account",
                     "6200000099", "--db", str(cli.db), "--operator", "carol").output
    assert f"returned payout {h1}: re-issued by the next day-end to this account" in out
    after_next = CUTOVER.instant(dt.date.fromisoformat(next_day)) + dt.timedelta(minutes=2)
    cli.run(next_day, after_next.isoformat())
    cli.approve(next_day, "bob")
    # re-issued at the approval that released the new payment, not at its return file
    assert cli.rows(f"SELECT status FROM payouts WHERE id = '{h1}'") == [("reissued",)]
    next_compact = next_day.replace("-", "")
    reissue = cli.rows(
        f"SELECT id, amount_fen, account_no FROM payouts WHERE business_date = '{next_day}'"
    )
    assert reissue == [(f"{next_compact}-I-h1", 20_001, "6200000099")]
    b1_next = outbox / f"PAYOUT_{next_compact}_b1_INS.txt"
    _bank(cli, "returns", str(b1_next), "--date", next_day)
    answer = next((cli.out / "bank").glob(f"RETURN_PAYOUT_{next_compact}_b1_INS_*.txt"))
    out = _import(cli, "import-returns", answer)
    assert "1 paid, 0 returned now" in out and "0 earlier returns re-issued" in out
    assert cli.rows(f"SELECT status FROM payouts WHERE id = '{h1}'") == [("reissued",)]
    assert cli.rows(f"SELECT reissue_of FROM payouts WHERE id = '{next_compact}-I-h1'") == [(h1,)]
    assert _balance(cli, "payins:h1") == 0
    _statements(cli, next_day, returned_file, answer)

    # h2's payment (bank b2) is still in flight: nothing else is.
    assert _balance(cli, "payoutins:centre") == -10_002
    debits, credits = cli.sums()
    assert debits == credits
    _invariants(cli)


def _import_with_key(cli: Cli, path: Path, alias: str) -> str:
    args = ("--db", str(cli.db), "--keys-home", str(cli.keys_home), *cli.components)
    return cli.invoke(
        "dayend", "import-returns", str(path), *args, "--file-key", alias, "--operator", "carol",
        ok=False
    ).output


def _statements(cli: Cli, day: str, *answers: Path) -> None:
    """The fund account's statement: u2's contribution (owed) and u3's (not owed: review), the
    payments paid; the EP float's: b1's savings debits."""
    paid = [arg for path in answers for arg in ("--paid-from", str(path))]
    _bank(
        cli,
        "statement",
        "--bank",
        "b1",
        "--date",
        day,
        "--account",
        "FUND",
        "--contribution",
        "u2=10000",
        "--contribution",
        "u3=5",
        *paid,
    )
    _bank(
        cli,
        "statement",
        "--bank",
        "b1",
        "--date",
        day,
        "--account",
        "EPFLOAT",
        "--savings-debits",
        "10000",
    )
    compact = day.replace("-", "")
    fund = cli.out / "bank" / f"STMT_{compact}_b1_FUND.txt"
    out = _import(cli, "import-statement", fund)
    assert "4 lines — 3 matched, 1 to review, 0 already imported" in out
    assert "more than the unit's contributions owed" in out
    assert _balance(cli, "contrib:u2") == 0  # settled by the statement
    clearing = _balance(cli, "clearing:b1")
    assert clearing == 10_000  # the savings debits the bank owes
    out = _import(cli, "import-statement", cli.out / "bank" / f"STMT_{compact}_b1_EPFLOAT.txt")
    assert "1 matched, 0 to review" in out
    assert _balance(cli, "clearing:b1") == 0 and _balance(cli, "epfloat:centre") >= 10_000
    before = _snapshot(cli)
    assert "0 matched, 0 to review, 4 already imported" in _import(cli, "import-statement", fund)
    assert _snapshot(cli) == before
    reasons = cli.rows(f"SELECT reason, amount_fen FROM review_items {OURS} ORDER BY seq")
    assert reasons == [("payout_returned", 20_001), ("bank_unmatched", 5)]
    statuses = cli.rows("SELECT kind, status FROM bank_statement_lines ORDER BY seq")
    assert statuses == [
        ("contribution", "matched"),
        ("contribution", "review"),
        ("payout_paid", "matched"),
        ("payout_paid", "matched"),
        ("savings_debit", "matched"),
    ]


def test_a_return_file_for_an_unreleased_or_unknown_payout_file_is_refused(cli: Cli) -> None:
    asyncio.run(_day(cli.db))
    date, after = today_and_after()
    cli.run(date, after)  # prepared, not approved: nothing released
    staged = (
        cli.out / "staging" / date.replace("-", "") / f"PAYOUT_{date.replace('-', '')}_b1_INS.txt"
    )
    _bank(cli, "returns", str(staged), "--date", date)
    answer = next((cli.out / "bank").glob("RETURN_*.txt"))
    before = _snapshot(cli)
    out = _import(cli, "import-returns", answer, ok=False)
    assert "never released" in out
    assert _snapshot(cli) == before

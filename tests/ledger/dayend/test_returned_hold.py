"""A returned payout is never re-sent to the account it came back from (specs/dayend-files.md,
*Re-issue after a return*), end to end through the CLI: the bank's return file returns h1's
payout (wrong account) and a cardholder's refund (account closed) → the next day-end holds both
(clearing report `held`, no payout, no file) → `dayend settlement-account` corrects h1's account
and `dayend confirm-reissue` confirms the refund's → the day-end after re-issues both, h1's to the
new account only, each naming the returned one, which becomes `reissued`."""

from __future__ import annotations

import csv
import datetime as dt

from tests.support.dayend import CUTOVER, Cli, approved_day


def _after(date: str) -> str:
    return (CUTOVER.instant(dt.date.fromisoformat(date)) + dt.timedelta(minutes=2)).isoformat()


def _bank(cli: Cli, *args: str) -> str:
    common = ("--home", str(cli.keys_home), *cli.components, "--out", str(cli.out / "bank"))
    return cli.invoke("sim", "bank-files", *args, *common).output


def _db(cli: Cli) -> tuple[str, ...]:
    return ("--db", str(cli.db), "--operator", "carol")


def _held(cli: Cli, date: str) -> dict[str, str]:
    report = cli.out / "reports" / f"CLEARING_{date.replace('-', '')}.csv"
    rows = list(csv.reader(report.read_text().splitlines()[2:]))
    return {r[1]: r[3] for r in rows if r[0] == "held"}


def test_a_returned_payout_is_held_until_its_account_is_corrected_or_confirmed(cli: Cli) -> None:
    cards, date, compact = approved_day(cli)
    h1, refund = f"{compact}-I-h1", f"{compact}-R-{cards[0].holder}"
    (old_account,), = cli.rows(f"SELECT account_no FROM payouts WHERE id = '{h1}'")
    (card_no,), = cli.rows(f"SELECT account_no FROM payouts WHERE id = '{refund}'")

    day2 = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
    outbox = cli.out / "outbox"
    _bank(cli, "returns", str(outbox / f"PAYOUT_{compact}_b1_INS.txt"), "--date", day2,
          "--return", "h1:R002:no such a/c")
    _bank(cli, "returns", str(outbox / f"REFUND_{compact}_b1_EP.enc"), "--date", day2,
          "--return", f"{cards[0].holder}:R001:closed")
    for answer in sorted((cli.out / "bank").glob("RETURN_*.txt")):
        cli.invoke("dayend", "import-returns", str(answer), "--keys-home", str(cli.keys_home),
                   *cli.components, *_db(cli))
    assert cli.rows(f"SELECT status FROM payouts WHERE id IN ('{h1}', '{refund}')") == [
        ("returned",), ("returned",)]

    # Not corrected: the next day-end pays neither (held, with the reason), sends no file.
    assert "closed: nothing to pay" in cli.run(day2, _after(day2)).output
    held = _held(cli, day2)
    assert held["payins:h1"] == f"returned payout {h1} (R002): the account is not corrected"
    assert held[f"refund:{cards[0].holder}"] == (
        f"returned payout {refund} (R001): the account is not corrected")
    assert cli.rows(f"SELECT COUNT(*) FROM payouts WHERE business_date = '{day2}'") == [(0,)]

    # Bad corrections are refused in one line, nothing changed.
    for args, says in ((("settlement-account", "nobody", "--bank", "b1", "--account", "1"),
                        "nobody is not an institution the centre pays"),
                       (("settlement-account", "h1", "--bank", "h2", "--account", "1"),
                        "h2 is not a bank on file"),
                       (("confirm-reissue", f"{compact}-I-p1"), "is paid, not returned"),
                       (("confirm-reissue", "nope"), "no payout nope")):
        out = cli.invoke("dayend", *args, *_db(cli), ok=False).output
        assert says in out and len(out.strip().splitlines()) == 1, out

    # h1's account corrected; the refund's account (the card's savings account) confirmed.
    out = cli.invoke("dayend", "settlement-account", "h1", "--bank", "b1", "--account",
                     "6200000099", *_db(cli)).output
    assert f"returned payout {h1}: re-issued by the next day-end to this account" in out
    out = cli.invoke("dayend", "confirm-reissue", refund, *_db(cli)).output
    assert f"payout {refund}: the next day-end pays it again through b1" in out
    again = cli.invoke("dayend", "confirm-reissue", refund, *_db(cli)).output
    assert "confirmed before, nothing changed" in again

    day3 = (dt.date.fromisoformat(day2) + dt.timedelta(days=1)).isoformat()
    cli.run(day3, _after(day3))
    assert "reissued" not in str(cli.rows(f"SELECT status FROM payouts WHERE id = '{h1}'"))
    assert "2 returned payouts re-issued" in cli.approve(day3, "bob").output
    compact3 = day3.replace("-", "")
    rows = cli.rows("SELECT id, account_no, reissue_of FROM payouts WHERE business_date = "
                    f"'{day3}' ORDER BY id")
    assert rows == [(f"{compact3}-I-h1", "6200000099", h1),
                    (f"{compact3}-R-{cards[0].holder}", card_no, refund)]
    assert cli.rows(f"SELECT status FROM payouts WHERE id IN ('{h1}', '{refund}')") == [
        ("reissued",), ("reissued",)]
    sent = (outbox / f"PAYOUT_{compact3}_b1_INS.txt").read_bytes()
    assert b"6200000099" in sent and old_account.encode() not in sent
    actions = cli.rows("SELECT action, subject FROM audit_log WHERE action IN "
                       "('institution.settlement_account', 'payout.reissue_confirmed')")
    assert actions == [("institution.settlement_account", "h1"),
                       ("payout.reissue_confirmed", refund)]

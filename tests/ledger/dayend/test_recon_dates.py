"""The dates of a bank's files are checked before anything posts (specs/dayend-files.md): a return
file dated before the business date of the payout file it answers, a return file or statement
dated after the next business date, and a file whose name (in the spec's form) carries another
date than its header are refused whole, naming the file and the dates."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import events as ev
from ledger.demo import init_demo
from ledger.sqlite_ledger import SqliteLedger
from tests.support.dayend import Cli, make_keys, personal_of, today_and_after

TABLES = ("transfers", "payouts", "review_items", "bank_statement_lines")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    db = tmp_path / "medswitch.db"
    home, components = make_keys(tmp_path)
    init_demo(db, 6, personal=personal_of(home, components))
    return Cli(db, home, components, tmp_path / "dayend", CliRunner())


async def _debit(db: Path) -> None:
    ledger = SqliteLedger.open(db)
    try:
        debit = ev.CardDebit("PSAM01", 1, "3100000000000001", ev.Purse.ED, 10_000, "h1", "h1")
        assert (await ev.post_card_debit(ledger, debit)).ok
    finally:
        await ledger.close()


def _bank(cli: Cli, *args: str) -> Path:
    out = cli.out / "bank"
    common = ("--home", str(cli.keys_home), *cli.components, "--out", str(out))
    cli.invoke("sim", "bank-files", *args, *common)
    return max(out.iterdir(), key=lambda path: path.stat().st_mtime_ns)


def _import(cli: Cli, what: str, path: Path, ok: bool) -> str:
    args = ("--db", str(cli.db), "--keys-home", str(cli.keys_home), *cli.components)
    return cli.invoke("dayend", what, str(path), *args, "--operator", "carol", ok=ok).output


def _snapshot(cli: Cli) -> list[list[tuple[object, ...]]]:
    return [sorted(cli.rows(f"SELECT * FROM {t}"), key=repr) for t in TABLES]


def test_misdated_return_files_and_statements_are_refused(cli: Cli) -> None:
    asyncio.run(_debit(cli.db))
    date, after = today_and_after()
    day = dt.date.fromisoformat(date)
    cli.run(date, after)
    cli.approve(date, "bob")
    payout = cli.out / "outbox" / f"PAYOUT_{day:%Y%m%d}_b1_INS.txt"
    before = _snapshot(cli)

    early = _bank(cli, "returns", str(payout), "--date", (day - dt.timedelta(days=1)).isoformat())
    out = _import(cli, "import-returns", early, ok=False)
    assert f"before {payout.name} it answers (business date {date})" in out

    later = (day + dt.timedelta(days=40)).isoformat()
    future = _bank(cli, "returns", str(payout), "--date", later)
    out = _import(cli, "import-returns", future, ok=False)
    assert f"{future.name} is dated {later}, later than" in out and "future" in out

    good = _bank(cli, "returns", str(payout), "--date", date)
    renamed = good.with_name(good.name.replace(f"{day:%Y%m%d}.txt", "20200101.txt"))
    renamed.write_bytes(good.read_bytes())
    out = _import(cli, "import-returns", renamed, ok=False)
    assert f"{renamed.name} is named for 2020-01-01 but its header is dated {date}" in out

    statement = _bank(
        cli, "statement", "--bank", "b1", "--date", later, "--account", "FUND",
        "--contribution", "u2=1",
    )  # fmt: skip
    out = _import(cli, "import-statement", statement, ok=False)
    assert f"{statement.name} is dated {later}, later than" in out
    assert _snapshot(cli) == before  # nothing of any of them

    assert "1 paid, 0 returned now" in _import(cli, "import-returns", good, ok=True)

"""`medswitch demo init` and the `medswitch ledger` commands, on a small deployment."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from ledger.demo import cardholder_rows, init_demo, luhn_digit
from ledger.migrate import head
from ledger.personal import Person, people
from ledger.sqlite_ledger import SqliteLedger
from switch.cli.groups import demo_group
from switch.cli.ledger import ledger_group
from switch.reply_file import replies_file
from tests.support.events import check_balances
from tests.support.operators import reader_env
from tests.support.personal import demo_keys


def test_demo_deployment_is_consistent_and_deterministic(tmp_path: Path) -> None:
    first = init_demo(tmp_path / "a.db", 120, personal=demo_keys(tmp_path), seed=7)
    second = init_demo(tmp_path / "b.db", 120, personal=demo_keys(tmp_path), seed=7)
    assert first == second
    assert first.cardholders == 120 and first.accounts > 7 * 120
    connection = sqlite3.connect(tmp_path / "a.db")
    cards = [row[0] for row in connection.execute("SELECT card_no FROM cards")]
    kinds = dict(connection.execute("SELECT kind, count(*) FROM institutions GROUP BY kind"))
    connection.close()
    assert len(cards) == 120 and all(luhn_digit(c[:-1]) == c[-1] for c in cards)
    assert {"hospital", "pharmacy", "bank", "employer_unit", "centre"} <= set(kinds)

    async def check() -> None:
        ledger = SqliteLedger.open(tmp_path / "a.db")
        try:
            await check_balances(ledger)
            receivables = [
                b for b in await ledger.all_balances() if b.account_id.startswith("contrib:")
            ]
            assert all(b.balance_fen == 0 for b in receivables)  # settled by the statement
        finally:
            await ledger.close()

    asyncio.run(check())
    with pytest.raises(FileExistsError):
        init_demo(tmp_path / "a.db", 1, personal=demo_keys(tmp_path))


def test_cli_demo_init_then_ledger_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "var" / "demo.db")
    runner = CliRunner()
    made = runner.invoke(demo_group, ["init", "--cardholders", "30", "--db", db])
    assert made.exit_code == 0, made.output
    assert "30 cardholders" in made.output
    again = runner.invoke(demo_group, ["init", "--cardholders", "30", "--db", db])
    assert again.exit_code != 0 and "exists" in again.output
    replies = replies_file(Path(db))  # the old deployment's replies: not the new one's
    replies.write_bytes(b"")
    forced = runner.invoke(demo_group, ["init", "--cardholders", "5", "--db", db, "--force"])
    assert forced.exit_code == 0, forced.output
    assert not replies.exists()
    runner = CliRunner(env=reader_env(Path(db), tmp_path / "tokens"))  # read by an auditor
    shown = runner.invoke(ledger_group, ["balance", "pf:0000000001", "--db", db])
    assert shown.exit_code == 0 and "PERSONAL_FUND" in shown.output
    # amounts in yuan, as the simulators print them
    assert re.search(r" debits \d+\.\d\d credits \d+\.\d\d balance -?\d+\.\d\d yuan$", shown.output)
    listed = runner.invoke(ledger_group, ["history", "pf:0000000001", "--db", db])
    assert listed.exit_code == 0 and "contribution|" in listed.output
    # a clock time, not microseconds
    assert re.search(r" 20\d\d-\d\d-\d\d \d\d:\d\d:\d\dZ .* \d+\.\d\d yuan ", listed.output)
    assert runner.invoke(ledger_group, ["reviews", "--db", db]).exit_code == 0
    migrated = runner.invoke(ledger_group, ["migrate", "--db", db])
    assert migrated.exit_code == 0 and f"revision {head()} (newest {head()})" in migrated.output
    missing = runner.invoke(ledger_group, ["balance", "pf:nobody", "--db", db])
    assert missing.exit_code != 0


def test_demo_names_and_id_numbers_are_sealed_at_rest(tmp_path: Path) -> None:
    """The database and its WAL hold no cardholder's name or ID number in clear; opened through
    the HSM they are the ones generated, and an ID number is found by its keyed hash."""
    personal = demo_keys(tmp_path)
    init_demo(tmp_path / "a.db", 50, personal=personal, seed=3)
    generated = {h["id"]: Person(h["ssn"], h["name"]) for h, _, _ in
                 cardholder_rows(1, 50, random.Random(3))}  # fmt: skip
    data = b"".join(p.read_bytes() for p in tmp_path.glob("a.db*"))
    for person in generated.values():
        assert person.ssn.encode() not in data and person.name.encode() not in data
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        assert asyncio.run(people(engine, personal, generated)) == generated
        holder, person = next(iter(generated.items()))
        index = asyncio.run(personal.ssn_index(person.ssn))
        with engine.connect() as connection:
            found = connection.exec_driver_sql(
                "SELECT id FROM cardholders WHERE ssn_index = ?", (index,)
            ).scalar_one()
        assert found == holder
    finally:
        engine.dispose()

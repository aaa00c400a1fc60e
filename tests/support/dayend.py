"""Day-end test support: a key home with the banks' file keys (through the CLI), the CLI runner,
and the business date of now with a clock after its cut-over."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from click.testing import CliRunner, Result

from hsm.des import kcv
from hsm.lmk import TEST_ONLY_COMPONENTS
from ledger import events as ev
from ledger.core import Ledger
from ledger.dayend.calendar import Cutover
from ledger.memory import MemoryLedger
from ledger.personal import PersonalKeys
from ledger.sqlite_ledger import SqliteLedger
from switch.cli import main
from switch.key_home import Home, component_files_of, open_soft_hsm, personal_keys
from tests.support.operators import NamedOperators

BANKS = ("b1", "b2")
CUTOVER = Cutover.parse("23:00", "Asia/Shanghai")  # the [dayend] defaults


def make_keys(tmp: Path, *, test_only_lmk: bool = False) -> tuple[Path, list[str]]:
    """A key home (LMK components from two custodians: random, or with `test_only_lmk` the
    published TEST ONLY ones, under which alone the published TEST ONLY keys may be formed)
    holding bank/<b>/FILE keys and the keys cardholders' names and ID numbers are sealed under
    (`personal_of`)."""
    home, runner, components = tmp / "keys", CliRunner(), []
    for who, published in zip(("alice", "bob"), TEST_ONLY_COMPONENTS, strict=True):
        path = tmp / f"{who}.component"
        if test_only_lmk:
            path.write_text(f"{published}\nKCV:{kcv(bytes.fromhex(published))}\n")
        else:
            args = ["keys", "--home", str(home), "component", "--custodian", who]
            assert runner.invoke(main, [*args, "--out", str(path)]).exit_code == 0
        components += ["-c", str(path)]
    steps = [["lmk-form", "--new", *components]]
    steps += [["generate", f"bank/{b}/FILE", "--usage", "FILE", *components] for b in BANKS]
    steps += [["generate", f"centre/{u}", "--usage", u, *components]
              for u in ("PERSONAL_DATA", "PERSONAL_INDEX")]  # fmt: skip
    for args in steps:
        result = runner.invoke(main, ["keys", "--home", str(home), *args])
        assert result.exit_code == 0, result.output
    return home, components


def personal_of(home: Path, components: list[str]) -> PersonalKeys:
    """The personal-data keys of a `make_keys` home (what `init_demo` seals with)."""
    hsm = open_soft_hsm(home, component_files_of([Path(p) for p in components[1::2]]))
    return asyncio.run(personal_keys(hsm, Home(home, "test").store))


def today_and_after() -> tuple[str, str]:
    """The business date of now, and an ISO time two minutes after its cut-over."""
    date = CUTOVER.date_of(time.time_ns() // 1000)
    after = CUTOVER.instant(date) + dt.timedelta(minutes=2)
    return date.isoformat(), after.isoformat()


@dataclass
class Cli:
    db: Path
    keys_home: Path
    components: list[str]
    out: Path
    runner: CliRunner
    _operators: NamedOperators | None = None

    def invoke(self, *args: str, ok: bool = True) -> Result:
        """As the operator ``--operator NAME`` names (enrolled on first use)."""
        result = self.runner.invoke(main, list(args), env=self.operators.env(args))
        assert (result.exit_code == 0) is ok, (args, result.output)
        return result

    def run(self, date: str, now: str, operator: str = "alice", ok: bool = True) -> Result:
        return self.invoke("dayend", "run", "--date", date, "--db", str(self.db), "--keys-home",
                           str(self.keys_home), *self.components, "--out", str(self.out),
                           "--operator", operator, "--now", now, ok=ok)

    def approve(self, date: str, operator: str, ok: bool = True) -> Result:
        return self.invoke("dayend", "approve", "--date", date, "--db", str(self.db), "--out",
                           str(self.out), "--operator", operator, ok=ok)

    def verify(self, path: Path, ok: bool = True) -> Result:
        return self.invoke("dayend", "verify", str(path), "--keys-home", str(self.keys_home),
                           *self.components, ok=ok)

    def status(self, date: str) -> Result:
        return self.invoke("dayend", "status", "--date", date, "--db", str(self.db))

    def tree(self) -> dict[str, bytes]:
        """Every file under the output directory, by relative path."""
        return {str(p.relative_to(self.out)): p.read_bytes()
                for p in sorted(self.out.rglob("*")) if p.is_file()}

    @property
    def operators(self) -> NamedOperators:
        if self._operators is None:
            self._operators = NamedOperators(self.db, self.out.parent / "operator-tokens")
        return self._operators

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db) as connection:
            return list(connection.execute(sql).fetchall())

    def sums(self) -> tuple[int, int]:
        (debits, credits), = self.rows("SELECT SUM(debits_posted), SUM(credits_posted) "
                                       "FROM accounts")
        return int(str(debits)), int(str(credits))


@dataclass(frozen=True)
class Card:
    card_no: str
    serial: str
    holder: str


def cards_of(db: Path, count: int) -> list[Card]:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT card_no, application_serial, cardholder_id FROM cards "
                         "ORDER BY card_no LIMIT ?", (count,)).fetchall()
    return [Card(*row) for row in rows]


async def day_events(ledger: Ledger, cards: list[Card]) -> None:
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


async def post_both(db: Path, cards: list[Card]) -> MemoryLedger:
    model = MemoryLedger()
    await model.open_accounts(ev.centre_accounts() + ev.bank_accounts("b1"))
    ledger = SqliteLedger.open(db)
    try:
        for target in (ledger, model):
            await day_events(target, cards)
    finally:
        await ledger.close()
    return model


class ApprovedDay(NamedTuple):
    cards: list[Card]
    date: str  # the business date, YYYY-MM-DD
    compact: str  # the same, YYYYMMDD, as in file names and payout ids


def approved_day(cli: Cli) -> ApprovedDay:
    """Four cards' day posted, its day-end run through the CLI and approved by bob."""
    cards = cards_of(cli.db, 4)
    asyncio.run(post_both(cli.db, cards))
    date, after = today_and_after()
    cli.run(date, after)
    cli.approve(date, "bob")
    return ApprovedDay(cards, date, date.replace("-", ""))

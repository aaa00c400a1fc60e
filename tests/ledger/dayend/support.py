"""Day-end test support: a key home with the banks' file keys (through the CLI), the CLI runner,
and the business date of now with a clock after its cut-over."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from ledger.dayend.calendar import Cutover
from switch.cli import main

BANKS = ("b1", "b2")
CUTOVER = Cutover.parse("23:00", "Asia/Shanghai")  # the [dayend] defaults


def make_keys(tmp: Path) -> tuple[Path, list[str]]:
    """A key home (test LMK components from two custodians) holding bank/<b>/FILE keys."""
    home, runner, components = tmp / "keys", CliRunner(), []
    for who in ("alice", "bob"):
        path = tmp / f"{who}.component"
        args = ["keys", "--home", str(home), "component", "--custodian", who]
        assert runner.invoke(main, [*args, "--out", str(path)]).exit_code == 0
        components += ["-c", str(path)]
    steps = [["lmk-form", "--new", *components]]
    steps += [["generate", f"bank/{b}/FILE", "--usage", "FILE", *components] for b in BANKS]
    for args in steps:
        result = runner.invoke(main, ["keys", "--home", str(home), *args])
        assert result.exit_code == 0, result.output
    return home, components


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

    def invoke(self, *args: str, ok: bool = True) -> Result:
        result = self.runner.invoke(main, list(args))
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

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db) as connection:
            return list(connection.execute(sql).fetchall())

    def sums(self) -> tuple[int, int]:
        (debits, credits), = self.rows("SELECT SUM(debits_posted), SUM(credits_posted) "
                                       "FROM accounts")
        return int(str(debits)), int(str(credits))

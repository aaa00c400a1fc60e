"""The back-office commands on PostgreSQL (`--database postgresql://...?schema=…`) do what they do
on SQLite: one scripted day — contributions and cardholders imported, a hospital's fee records,
`dayend run` (maker) and `approve` (checker), the bank's return file and statement imported,
the review queue listed, shown, accepted, adjusted under maker-checker and swept, statements
for an institution and a unit — run on a SQLite demo and on a PostgreSQL demo of the same seed
prints the same lines and writes the same files, byte for byte. Each step must succeed, and the
lines the SQLite tests check (tests/ledger/dayend/test_recon_cli.py and others) are checked here
on both."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from ledger import events as ev
from ledger.core import Ledger
from ledger.demo import init_demo
from ledger.medical.feerecords import FeeFile, FeeKind, FeeRecord, build_fee_file
from ledger.medical.filemac import seal
from ledger.medical.policy import EXAMPLE
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger
from switch.cli import main
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.dayend import CUTOVER, make_keys, personal_of, today_and_after
from tests.support.operators import NamedOperators
from tests.support.pg import DSN

pytestmark = pytest.mark.postgres

CARDHOLDERS_CSV = """cardholder_id,ssn,name,category,birth_date,unit_id
9000000001,310101199001011234,张三,employed,1990-01-01,u1
9000000002,31010119550315123X,李四,retired,1955-03-15,u2
"""
CONTRIBUTIONS_CSV = """unit_id,cardholder_id,amount_fen
u1,9000000001,12000
u2,9000000002,8000
"""
#: what depends on the clock: timings, and ages measured from when the test posted its day (the
#: two databases' days are posted a moment apart, so an age may differ by a second) — with the
#: clearing report's hash, which covers those ages
_CLOCK = re.compile(
    r"^timing: .*$|\d+(\.\d+)? s\)|in doubt \d+ s|(?<=\.csv sha256 )[0-9a-f]{64}", re.MULTILINE
)
_REPORT_AGE = re.compile(rb"(?m)^(in_doubt,[^,\n]*,age_s,)\d+")


@dataclass
class Office:
    """One deployment's back office: its database options, key home and output directory."""

    database: list[str]  # ["--db", FILE] or ["--database", URL]
    keys_home: Path
    components: list[str]
    out: Path
    runner: CliRunner

    def invoke(self, *args: str, db: bool = True, ok: bool = True) -> str:
        """As the operator ``--operator NAME`` names, else as the clerk (enrolled on first
        use)."""
        where = self.database[1]
        operators = NamedOperators(where if where.startswith("postgres") else Path(where),
                                   self.out.with_name(self.out.name + "-operator-tokens"))
        named = args if "--operator" in args else (*args, "--operator", "clerk")  # imports
        result = self.runner.invoke(
            main, [*args, *(self.database if db else [])], env=operators.env(named)
        )
        assert (result.exit_code == 0) is ok, (args, result.output)
        return _CLOCK.sub("", result.output.replace(str(self.out), "OUT"))

    def keyed(self, *args: str, ok: bool = True) -> str:
        return self.invoke(*args, "--keys-home", str(self.keys_home), *self.components, ok=ok)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, list[str]]:
    home, components = make_keys(tmp_path)
    for alias in ("file/social", "file/h1"):
        args = ["keys", "--home", str(home), "generate", alias, "--usage", "FILE", *components]
        assert CliRunner().invoke(main, args).exit_code == 0
    return home, components


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"t_{secrets.token_hex(6)}"

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{DSN}?schema={schema}"
    finally:
        asyncio.run(execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


async def _day(ledger: Ledger) -> None:
    """h1 and p1 are paid through b1, h2 through b2; EP loads are savings debits at b1; u2 owes
    a contribution; an EP load left in doubt (swept into review)."""
    serials = [f"3100{n:012d}" for n in range(1, 5)]
    for n, (serial, institution) in enumerate(zip(serials, ("h1", "h1", "h2", "p1"), strict=True)):
        debit = ev.CardDebit("PSAM01", n + 1, serial, ev.Purse.ED, 10_000 + n, institution,
                             institution)
        assert (await ev.post_card_debit(ledger, debit)).ok
    for n, serial in enumerate(serials[:2]):
        attempt = ev.load(f"kiosk|{n}", "00", serial, ev.Purse.EP, 1, 5_000, "b1")
        assert (await ev.post_into_doubt(ledger, attempt)).ok
        assert (await ev.resolve_attempt(ledger, attempt, happened=True)).ok
    doubt = ev.load("kiosk|9", "00", serials[2], ev.Purse.EP, 2, 700, "b1")
    assert (await ev.post_into_doubt(ledger, doubt)).ok
    line = ev.ContributionLine("u2", "2026-11", "0000000001", 3_000, 7_000)
    assert (await ev.post_contribution(ledger, line)).ok


def _fee_file(office: Office, date: str) -> Path:
    fees = FeeFile("h1", dt.date.fromisoformat(date), (
        FeeRecord(2, FeeKind.BILL, "0123456789ABCDEF", "6212340000000016", 500, 500,
                  date.replace("-", "") + "093000"),
    ))

    async def sealed() -> bytes:
        files = [Path(p) for p in office.components[1::2]]
        hsm = open_soft_hsm(office.keys_home, component_files_of(files))
        key = await resolve(Home(office.keys_home, "test"), "file/h1")
        return await seal(hsm, key, build_fee_file(fees))

    path = office.out / "fees.dat"
    path.write_bytes(asyncio.run(sealed()))
    return path


def _script(office: Office) -> list[str]:
    """The day, through the CLI; every command's output (paths and timings left out)."""
    office.out.mkdir(parents=True, exist_ok=True)
    date, after = today_and_after()
    compact = date.replace("-", "")
    said: list[str] = []
    run = said.append

    # The year's policy; the counterparties' files: cardholders, their contributions, a
    # hospital's fee records.
    for name, text in (("k.csv", CARDHOLDERS_CSV), ("c.csv", CONTRIBUTIONS_CSV),
                       ("policy.toml", EXAMPLE)):
        (office.out / name).write_text(text, encoding="utf-8")
    run(office.invoke("policy", "import", str(office.out / "policy.toml")))
    common = ("--keys-home", str(office.keys_home), *office.components, "--file-key",
              "file/social")
    run(office.invoke("ledger-files", "build-cardholders", str(office.out / "k.csv"),
                      "--file-id", "K1", "--out", str(office.out / "k.dat"), *common, db=False))
    run(office.invoke("ledger-files", "build-contributions", str(office.out / "c.csv"),
                      "--period", "2026-11", "--file-id", "C1", "--out",
                      str(office.out / "c.dat"), *common, db=False))
    run(office.keyed("import", "cardholders", str(office.out / "k.dat"), "--file-key",
                     "file/social"))
    run(office.keyed("import", "contributions", str(office.out / "c.dat"), "--file-key",
                     "file/social"))
    run(office.keyed("import", "contributions", str(office.out / "c.dat"), "--file-key",
                     "file/social"))
    assert "2 lines" in said[-2] and "0 posted, 2 already posted" in said[-1]
    run(office.keyed("import", "fee-records", str(_fee_file(office, date)), "--file-key",
                     "file/h1"))
    assert "1 records" in said[-1] and "fee_record_without_payment" in said[-1]

    # Day-end: the maker, the maker refused as checker, the checker.
    dayend = ("--out", str(office.out / "dayend"))
    run(office.keyed("dayend", "run", "--date", date, *dayend, "--operator", "alice", "--now",
                     after))
    assert "prepared: awaiting approval" in said[-1]
    run(office.invoke("dayend", "approve", "--date", date, *dayend, "--operator", "alice",
                      ok=False))
    run(office.invoke("dayend", "approve", "--date", date, *dayend, "--operator", "bob"))
    assert "payouts posted" in said[-1]
    run(office.invoke("dayend", "status", "--date", date))

    # The bank's answer: h1's payment returned, then its statement of the fund account.
    bank = ("--home", str(office.keys_home), *office.components, "--out", str(office.out / "bank"))
    outbox = office.out / "dayend" / "outbox"
    next_day = (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
    run(office.invoke("sim", "bank-files", "returns", str(outbox / f"PAYOUT_{compact}_b1_INS.txt"),
                      "--date", next_day, "--return", "h1:R002:no such a/c", *bank, db=False))
    returned = next((office.out / "bank").glob("RETURN_PAYOUT_*_b1_INS_*.txt"))
    for _ in range(2):
        run(office.keyed("dayend", "import-returns", str(returned), "--operator", "carol"))
    assert "1 paid, 1 returned now" in said[-2] and "2 already answered" in said[-1]
    # h1's account corrected (PostgreSQL: the institution row, the audit entry, the returned
    # payouts the next day-end re-issues; ledger.dayend.returned_hold).
    run(office.invoke("dayend", "settlement-account", "h1", "--bank", "b1", "--account",
                      "6200000099", "--operator", "carol"))
    assert f"returned payout {compact}-I-h1: re-issued by the next day-end" in said[-1]
    run(office.invoke("sim", "bank-files", "statement", "--bank", "b1", "--date", next_day,
                      "--account", "FUND", "--contribution", "u2=10000", "--contribution", "u3=5",
                      "--paid-from", str(returned), *bank, db=False))
    statement = next((office.out / "bank").glob("STMT_*_b1_FUND.txt"))
    for _ in range(2):
        run(office.keyed("dayend", "import-statement", str(statement), "--operator", "carol"))
    assert "1 to review" in said[-2] and "3 already imported" in said[-1]

    # The review queue: list, show, accept one, adjust another under maker-checker, sweep.
    late = (CUTOVER.instant(dt.date.fromisoformat(next_day)) + dt.timedelta(days=2)).isoformat()
    run(office.invoke("review", "sweep", "--now", late, "--age", "1h"))
    assert "1 new review item(s)" in said[-1]
    run(office.invoke("review", "list", "--status", "open"))
    keys = re.findall(r"^\s+#\d+\s+([0-9a-f]{12}) ", said[-1], re.MULTILINE)
    assert len(keys) >= 3, said[-1]
    run(office.invoke("review", "accept", keys[0], "--operator", "alice", "--note", "as posted"))
    run(office.invoke("review", "adjust", keys[1], "--debit", "payins:h1", "--credit",
                      "pool:centre", "--amount", "1.00", "--operator", "alice"))
    approval = re.search(r"adjustment (\d+) pending", said[-1])
    if approval is not None:  # the pair is allowed for this item's reason
        run(office.invoke("review", "approve-adjustment", approval[1], "--operator", "alice",
                          ok=False))
        run(office.invoke("review", "approve-adjustment", approval[1], "--operator", "bob"))
    run(office.invoke("review", "reject", keys[2], "--operator", "bob", "--note", "wrong"))
    run(office.invoke("review", "list"))

    # Statements over the two days.
    for kind, party in (("institution", "h1"), ("unit", "u2")):
        run(office.invoke("statements", kind, party, "--from", date, "--to", next_day, "--out",
                          str(office.out / "statements")))
    run(office.invoke("ledger", "balance", "payins:h1"))
    return said


def _files(out: Path) -> dict[str, bytes]:
    """The files the day wrote; in the clearing reports the in-doubt ages (seconds since the
    test posted its day, see _CLOCK) and, wherever it is quoted, a report's hash left out."""
    skip = (".csv", ".dat", ".toml")
    found = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and not (p.parent == out and p.suffix in skip)}
    hashes = [hashlib.sha256(data).hexdigest().encode()
              for name, data in found.items() if Path(name).name.startswith("CLEARING_")]
    for name, data in found.items():
        for digest in hashes:
            data = data.replace(digest, b"SHA256")
        found[name] = _REPORT_AGE.sub(rb"\1AGE", data)
    return found


def test_the_back_office_on_postgresql_does_what_it_does_on_sqlite(
    tmp_path: Path, keys: tuple[Path, list[str]], pg_url: str
) -> None:
    db = tmp_path / "medswitch.db"
    personal = personal_of(*keys)  # names sealed under the key home's PERSONAL_DATA key
    init_demo(db, 6, seed=5, personal=personal)
    init_demo(pg_url, 6, seed=5, personal=personal)

    async def post_days() -> None:
        lite = SqliteLedger.open(db)
        dsn, schema = pg_url.split("?schema=")
        pg = await PgLedger.open(dsn, schema=schema, migrate=False)
        try:
            await _day(lite)
            await _day(pg)
        finally:
            await lite.close()
            await pg.close()

    asyncio.run(post_days())
    home, components = keys
    on_sqlite = Office(["--db", str(db)], home, components, tmp_path / "lite", CliRunner())
    on_postgres = Office(["--database", pg_url], home, components, tmp_path / "pg", CliRunner())
    said = _script(on_sqlite)
    assert _script(on_postgres) == said
    assert _files(on_postgres.out) == _files(on_sqlite.out)
    assert any("approved by bob" in line for line in said)

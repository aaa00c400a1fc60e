"""Contributions and cardholders files through the CLI (specs/ledger-files.md), on a temp demo
database and a temp key home: built, imported, split by the policy's age ratios, re-imported
with no effect; every refusal (MAC, trailer count or total, malformed line, unknown unit or
cardholder, undecryptable personal data) leaves every row of the database unchanged; the
ledger sums to zero; files are byte-deterministic."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hsm.keys import KeyRef
from hsm.soft import SoftHsm
from ledger.demo import init_demo
from ledger.ledger_files import (
    CONTRIBUTIONS,
    ContributionFile,
    ContributionRecord,
    age_on,
    build_contributions,
    contributions_from_framed,
    split_contribution,
)
from ledger.medical.filemac import seal
from ledger.medical.policy import EXAMPLE, parse_policy
from ledger.medical.recordfile import build, parse
from ledger.medical.sql_reference import ReferenceData
from ledger.medical.sql_store import sqlite_engine
from ledger.personal import Person, people
from switch.cli import main
from switch.key_home import Home, component_files_of, open_soft_hsm, personal_keys, resolve
from tests.support.operators import NamedOperators

HOLDERS = 12


def assert_no_clear_personal_data(db: Path, secrets: list[str]) -> None:
    """Neither the database file nor its WAL holds any of ``secrets`` in clear (UTF-8, as
    SQLite stores text; UTF-16 too)."""
    files = [db.with_name(db.name + suffix) for suffix in ("", "-wal")]
    data = b"".join(f.read_bytes() for f in files if f.exists())
    assert data
    for secret in secrets:
        for encoded in (secret.encode(), secret.encode("utf-16-le")):
            assert encoded not in data, secret
TABLES = ("accounts", "transfers", "cardholders", "cards", "review_items")


@dataclass
class World:
    tmp: Path
    db: Path
    keys_home: Path
    components: list[str]
    runner: CliRunner

    def run(self, *args: str, ok: bool = True) -> Result:
        """Imports run as the clerk, an operator enrolled on first use."""
        operators = NamedOperators(self.db, self.tmp / "operator-tokens")
        env = operators.env([*args, "--operator", "clerk"]) if args[0] == "import" else {}
        result = self.runner.invoke(main, list(args), env=env)
        assert (result.exit_code == 0) is ok, result.output
        return result

    def common(self) -> list[str]:
        return ["--db", str(self.db), "--keys-home", str(self.keys_home), *self.components]

    def hsm_and_key(self) -> tuple[SoftHsm, KeyRef]:
        hsm = open_soft_hsm(
            self.keys_home, component_files_of([Path(p) for p in self.components[1::2]])
        )
        return hsm, asyncio.run(resolve(Home(self.keys_home, "test"), "file/social"))

    def sealed(self, body: bytes, name: str) -> Path:
        hsm, key = self.hsm_and_key()
        path = self.tmp / name
        path.write_bytes(asyncio.run(seal(hsm, key, body)))
        return path

    def people(self, ids: list[str]) -> dict[str, Person]:
        """Cardholders opened through the HSM, as card issuance and refund files read them."""
        hsm = open_soft_hsm(
            self.keys_home, component_files_of([Path(p) for p in self.components[1::2]])
        )

        async def opened() -> dict[str, Person]:
            keys = await personal_keys(hsm, Home(self.keys_home, "test").store)
            engine = sqlite_engine(self.db)
            try:
                return await people(engine, keys, ids)
            finally:
                engine.dispose()

        return asyncio.run(opened())

    def snapshot(self) -> dict[str, list[tuple[object, ...]]]:
        with sqlite3.connect(self.db) as connection:
            return {
                table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall())
                for table in TABLES
            }

    def sums(self) -> tuple[int, int]:
        with sqlite3.connect(self.db) as connection:
            row = connection.execute(
                "SELECT SUM(debits_posted), SUM(credits_posted) FROM accounts"
            ).fetchone()
        return int(row[0]), int(row[1])

    def balance(self, account: str) -> int:
        with sqlite3.connect(self.db) as connection:
            row = connection.execute(
                "SELECT credits_posted - debits_posted FROM accounts WHERE id = ?", (account,)
            ).fetchone()
        return 0 if row is None else int(row[0])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("keys")
    keys_home, runner, components = tmp / "home", CliRunner(), []
    for who in ("alice", "bob"):
        path = tmp / f"{who}.txt"
        args = ["keys", "--home", str(keys_home), "component", "--custodian", who]
        assert runner.invoke(main, [*args, "--out", str(path)]).exit_code == 0
        components += ["-c", str(path)]
    for args in (
        ["lmk-form", "--new", *components],
        ["generate", "file/social", "--usage", "FILE", *components],
        ["generate", "file/other", "--usage", "FILE", *components],
        ["generate", "tdk/one", "--usage", "TDK", *components],
        ["generate", "centre/PERSONAL_DATA", "--usage", "PERSONAL_DATA", *components],
        ["generate", "centre/PERSONAL_INDEX", "--usage", "PERSONAL_INDEX", *components],
    ):
        result = runner.invoke(main, ["keys", "--home", str(keys_home), *args])
        assert result.exit_code == 0, result.output
    return keys_home, components


@pytest.fixture
def world(tmp_path: Path, keys: tuple[Path, list[str]]) -> World:
    db = tmp_path / "demo.db"
    keys_home, files = keys[0], [Path(p) for p in keys[1][1::2]]
    hsm = open_soft_hsm(keys_home, component_files_of(files))
    personal = asyncio.run(personal_keys(hsm, Home(keys_home, "test").store))
    init_demo(db, HOLDERS, personal=personal)
    engine = sqlite_engine(db)
    ReferenceData(engine).set_policy(EXAMPLE, 0, "test")  # the 2026 policy
    engine.dispose()
    return World(tmp_path, db, keys[0], keys[1], CliRunner())


def _holders(db: Path) -> list[tuple[str, str, dt.date]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT id, unit_id, birth_date FROM cardholders ORDER BY id")
        return [(h, u, dt.date.fromisoformat(b)) for h, u, b in rows]


def _contributions_csv(world: World, amount: Callable[[int], int]) -> Path:
    path = world.tmp / "contributions.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["unit_id", "cardholder_id", "amount_fen"])
        for index, (holder, unit, _) in enumerate(_holders(world.db)):
            writer.writerow([unit, holder, amount(index)])
    return path


def _build_contributions(world: World, csv_path: Path, out: str, file_id: str = "C1") -> Path:
    target = world.tmp / out
    world.run(
        "ledger-files", "build-contributions", str(csv_path), "--period", "2026-11",
        "--file-id", file_id, "--out", str(target), "--keys-home", str(world.keys_home),
        *world.components, "--file-key", "file/social",
    )  # fmt: skip
    return target


def _import(world: World, what: str, path: Path, ok: bool = True, key: str = "file/social") -> str:
    args = ("import", what, str(path), *world.common(), "--file-key", key)
    return world.run(*args, ok=ok).output


def test_contributions_round_trip_split_by_age_and_idempotent(world: World) -> None:
    policy = parse_policy(EXAMPLE)
    holders = _holders(world.db)
    before = {h: world.balance(f"pf:{h}") for h, _, _ in holders}
    pool_before = world.balance("pool:centre")
    receivable_before = sum(world.balance(f"contrib:u{u}") for u in range(1, 21))
    csv_path = _contributions_csv(world, lambda i: 10_001 + 1_000 * i)
    path = _build_contributions(world, csv_path, "c.dat")
    assert _build_contributions(world, csv_path, "again.dat").read_bytes() == path.read_bytes()
    assert path.read_bytes().startswith(b"H|CONTRIBUTIONS|1|C1|2026-11\nD|u2|0000000001|10001\n")

    out = _import(world, "contributions", path)
    assert f"{HOLDERS} posted, 0 already posted" in out
    pooled = 0
    for index, (holder, _, born) in enumerate(holders):
        bp = policy.personal_share_bp(age_on(born, dt.date(2026, 11, 1)))
        personal, pool = split_contribution(10_001 + 1_000 * index, bp)
        assert world.balance(f"pf:{holder}") - before[holder] == personal
        pooled += pool
    assert world.balance("pool:centre") - pool_before == pooled
    debits, credits = world.sums()
    assert debits == credits
    receivable = sum(world.balance(f"contrib:u{u}") for u in range(1, 21))
    assert receivable == receivable_before - sum(10_001 + 1_000 * i for i in range(HOLDERS))

    snapshot = world.snapshot()
    out = _import(world, "contributions", path)
    assert f"0 posted, {HOLDERS} already posted" in out
    assert world.snapshot() == snapshot


def test_every_contribution_refusal_leaves_the_database_unchanged(world: World) -> None:
    csv_path = _contributions_csv(world, lambda i: 5_000 + i)
    good = _build_contributions(world, csv_path, "good.dat")
    framed = parse(good.read_bytes(), CONTRIBUTIONS)
    parsed = contributions_from_framed(framed)
    records = [[r.unit_id, r.cardholder_id, str(r.amount_fen)] for r in parsed.records]
    header = ["1", "C1", "2026-11"]
    total = parsed.amount_total_fen

    def body(rows: list[list[str]], amount_total: int = total) -> bytes:
        return build(CONTRIBUTIONS, header, rows, amount_total_fen=amount_total)

    tampered = world.tmp / "tampered.dat"
    tampered.write_bytes(good.read_bytes().replace(b"|5000\n", b"|5900\n"))
    short = body(records[:-1], total - parsed.records[-1].amount_fen)  # count fixed below
    wrong_count = short.replace(f"T|{HOLDERS - 1}|".encode(), f"T|{HOLDERS}|".encode())
    unknown_holder = [*records[:-1], [records[-1][0], "9999999999", records[-1][2]]]
    unknown_unit = [*records[:-1], ["u99", records[-1][1], records[-1][2]]]
    cases = {
        "MAC": tampered,
        "counts": world.sealed(wrong_count, "count.dat"),
        "amount total": world.sealed(body(records, total + 1), "total.dat"),
        "line 3: amount is not an integer": world.sealed(
            body([records[0], [records[1][0], records[1][1], "12.50"], *records[2:]]), "bad.dat"
        ),
        "a contribution is": world.sealed(body([*records[:-1], records[-1][:2]]), "short.dat"),
        "unknown cardholder 9999999999": world.sealed(body(unknown_holder), "holder.dat"),
        "unknown employer unit(s): u99": world.sealed(body(unknown_unit), "unit.dat"),
        "a second line": world.sealed(body([*records, records[0]], total + 5_000), "dup.dat"),
    }
    snapshot = world.snapshot()
    for expected, path in cases.items():
        out = _import(world, "contributions", path, ok=False)
        assert "refused" in out and expected in out, (expected, out)
        assert world.snapshot() == snapshot, expected
    out = _import(world, "contributions", good, ok=False, key="file/other")
    assert "MAC" in out
    assert world.snapshot() == snapshot


def test_a_second_file_with_other_amounts_for_the_same_period_posts_nothing(world: World) -> None:
    first = _build_contributions(world, _contributions_csv(world, lambda i: 100 + i), "a.dat")
    _import(world, "contributions", first)
    snapshot = world.snapshot()
    other = _build_contributions(world, _contributions_csv(world, lambda i: 200 + i), "b.dat", "C2")
    out = _import(world, "contributions", other, ok=False)
    assert "EXISTS_WITH_DIFFERENT_DATA" in out and "nothing was posted" in out
    assert world.snapshot() == snapshot


def test_no_policy_for_the_period_is_refused(world: World) -> None:
    body = build_contributions(
        ContributionFile("C9", "2031-01", (ContributionRecord("u2", "0000000001", 100),))
    )
    snapshot = world.snapshot()
    out = _import(world, "contributions", world.sealed(body, "2031.dat"), ok=False)
    assert "no policy for 2031" in out
    assert world.snapshot() == snapshot


CARDHOLDERS_CSV = """cardholder_id,ssn,name,category,birth_date,unit_id
9000000001,310101199001011234,张三,employed,1990-01-01,u1
9000000002,31010119550315123X,李四,retired,1955-03-15,u2
9000000003,310101198808081111,王五,employed,1988-08-08,u1
"""


def _build_cardholders(world: World, text: str, out: str, file_id: str = "K1") -> Path:
    csv_path, target = world.tmp / f"{out}.csv", world.tmp / out
    csv_path.write_text(text, encoding="utf-8")
    world.run(
        "ledger-files", "build-cardholders", str(csv_path), "--file-id", file_id,
        "--out", str(target), "--keys-home", str(world.keys_home), *world.components,
        "--file-key", "file/social",
    )  # fmt: skip
    return target


def test_cardholders_round_trip_encrypted_then_contributions(world: World) -> None:
    path = _build_cardholders(world, CARDHOLDERS_CSV, "k.dat")
    data = path.read_bytes()
    assert _build_cardholders(world, CARDHOLDERS_CSV, "k2.dat").read_bytes() == data
    for secret in ("张三".encode(), b"310101199001011234", "李四".encode()):
        assert secret not in data  # names and ID numbers travel encrypted
    assert data.startswith(b"H|CARDHOLDERS|1|K1\nD|9000000001|u1|employed|19900101|")
    assert b"\nT|3|0\nM|" in data

    out = _import(world, "cardholders", path)
    assert "3 added, 0 updated, 0 unchanged" in out
    with sqlite3.connect(world.db) as connection:
        row = connection.execute(
            "SELECT ssn, name, category, birth_date, unit_id FROM cardholders WHERE id = ?",
            ("9000000002",),
        ).fetchone()
    assert row == (None, None, "retired", "1955-03-15", "u2")  # sealed at rest
    assert world.people(["9000000002"]) == {"9000000002": Person("31010119550315123X", "李四")}
    assert_no_clear_personal_data(world.db, ["31010119550315123X", "李四", "张三", "王五"])
    assert world.balance("pf:9000000002") == 0
    snapshot = world.snapshot()
    assert "0 added, 0 updated, 3 unchanged" in _import(world, "cardholders", path)
    assert world.snapshot() == snapshot

    moved = CARDHOLDERS_CSV.replace("王五,employed,1988-08-08,u1", "王五,employed,1988-08-08,u3")
    out = _import(world, "cardholders", _build_cardholders(world, moved, "k3.dat", "K2"))
    assert "0 added, 1 updated, 2 unchanged" in out
    renamed = moved.replace("张三", "张叁")
    out = _import(world, "cardholders", _build_cardholders(world, renamed, "k4.dat", "K4"))
    assert "0 added, 1 updated, 2 unchanged" in out
    assert world.people(["9000000001"])["9000000001"].name == "张叁"  # sealed again
    assert_no_clear_personal_data(world.db, ["张叁"])

    csv_path = world.tmp / "new.csv"
    csv_path.write_text(
        "unit_id,cardholder_id,amount_fen\nu1,9000000001,10000\nu2,9000000002,10000\n"
    )
    out = _import(world, "contributions", _build_contributions(world, csv_path, "nc.dat"))
    assert "2 posted" in out
    assert world.balance("pf:9000000001") == 3_500  # 36 on 2026-11-01: 35 %
    assert world.balance("pf:9000000002") == 4_000  # 71: 40 %
    debits, credits = world.sums()
    assert debits == credits


def test_every_cardholder_refusal_leaves_the_database_unchanged(world: World) -> None:
    good = _build_cardholders(world, CARDHOLDERS_CSV, "good.dat")
    data = good.read_bytes()
    lines = data.decode().split("\n")
    body_lines = lines[:-2]  # without the M line and the final empty string

    def resealed(edit: Callable[[list[str]], list[str]], name: str) -> Path:
        return world.sealed(("\n".join(edit(list(body_lines))) + "\n").encode(), name)

    def swap_secret(rows: list[str]) -> list[str]:
        first, second = rows[1].rsplit("|", 1), rows[2].rsplit("|", 1)
        rows[1], rows[2] = f"{first[0]}|{second[1]}", f"{second[0]}|{first[1]}"
        return rows

    taken = CARDHOLDERS_CSV.replace("9000000003,", "0000000001,")  # a demo cardholder's id
    cases = {
        "MAC": good.with_name("t.dat"),
        "counts": resealed(lambda r: [*r[:-1], "T|4|0"], "count.dat"),
        "amount total": resealed(lambda r: [*r[:-1], "T|3|7"], "total.dat"),
        "not this record's": resealed(swap_secret, "swap.dat"),
        "category is employed or retired": resealed(
            lambda r: [r[0], r[1].replace("|employed|", "|student|"), *r[2:]], "cat.dat"
        ),
        "unknown employer unit(s): u77": resealed(
            lambda r: [r[0], r[1].replace("|u1|", "|u77|"), *r[2:]], "unit.dat"
        ),
        "registered with another ID number": _build_cardholders(world, taken, "taken.dat", "K3"),
        "line 2: a cardholder is D|id": resealed(
            lambda r: [r[0], r[1].replace("|employed|", "|"), *r[2:]], "fields.dat"
        ),
        "line 3: the personal data are not hex": resealed(
            lambda r: [r[0], r[1], r[2][:-1] + "G", *r[3:]], "hex.dat"
        ),
        "line 2: the personal data do not decrypt": resealed(
            lambda r: [r[0], r[1].rsplit("|", 1)[0] + "|" + r[1].rsplit("|", 1)[1][:16], *r[2:]],
            "cut.dat",
        ),
    }
    cases["MAC"].write_bytes(data.replace(b"|employed|", b"|retired|", 1))
    snapshot = world.snapshot()
    for expected, path in cases.items():
        out = _import(world, "cardholders", path, ok=False)
        assert "refused" in out and expected in out, (expected, out)
        assert world.snapshot() == snapshot, expected
    out = _import(world, "cardholders", good, ok=False, key="tdk/one")
    assert "refused" in out and "is TDK" in out
    assert world.snapshot() == snapshot


def test_doctests() -> None:
    import doctest

    import ledger.ledger_files

    assert doctest.testmod(ledger.ledger_files).failed == 0


def test_a_cardholder_without_a_birth_date_is_refused(world: World) -> None:
    with sqlite3.connect(world.db) as connection:
        connection.execute("UPDATE cardholders SET birth_date = NULL WHERE id = '0000000003'")
    body = build_contributions(
        ContributionFile(
            "C5",
            "2026-11",
            (
                ContributionRecord("u2", "0000000001", 100),
                ContributionRecord("u4", "0000000003", 100),
            ),
        )
    )
    snapshot = world.snapshot()
    out = _import(world, "contributions", world.sealed(body, "nobirth.dat"), ok=False)
    assert "line 3: cardholder 0000000003 has no birth date" in out
    assert world.snapshot() == snapshot

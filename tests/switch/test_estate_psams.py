"""PSAMs and cards by command on a demo deployment: a terminal's PSAM replaced only by an
unbound PSAM of its own institution (the old one retired), a terminal holding a PSAM refused a
move to another institution, PSAM status changes audited; card numbers always masked."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner, Result

from ledger.demo import init_demo
from switch.cli import main
from tests.support.operators import as_operator, enrol
from tests.support.personal import demo_keys


def test_psams_cards_and_the_estate_rules(tmp_path: Path) -> None:
    db = tmp_path / "medswitch.db"
    init_demo(db, 3, personal=demo_keys(tmp_path))
    env = as_operator(enrol(db, tmp_path / "tokens", "mia", "maker"))

    def run(*args: str, ok: bool = True, group_db: bool = False) -> str:
        where = ["--db", str(db)]
        argv = [args[0], *where, *args[1:]] if group_db else [*args, *where]
        result: Result = CliRunner().invoke(main, argv, env=env)
        assert (result.exit_code == 0) is ok, (args, result.output)
        return result.output

    # P0000001 (h1) holds PSAM …001; …002 is P0000002's (h1); …003 belongs to h2.
    other = run("terminals", "replace-psam", "P0000001", "--psam", "1000000000000003", ok=False)
    assert "belongs to institution h2" in other
    bound = run("terminals", "replace-psam", "P0000001", "--psam", "1000000000000002", ok=False)
    assert "bound to terminal P0000002" in bound
    run("psams", "unbind", "1000000000000002", group_db=True)
    replaced = run("terminals", "replace-psam", "P0000001", "--psam", "1000000000000002",
                   "--json")
    assert json.loads(replaced)["psam_serial"] == "1000000000000002"
    old = run("psams", "show", "1000000000000001", "--json", group_db=True)
    assert json.loads(old)["status"] == "retired" and json.loads(old)["terminal_id"] is None
    assert "retired" in run("psams", "enable", "1000000000000001", ok=False, group_db=True)

    moving = run("terminals", "move", "P0000001", "--institution", "h2", ok=False)
    assert "replace its PSAM (or unbind it) before the move" in moving
    run("psams", "disable", "1000000000000002", group_db=True)
    assert " h2 " in run("terminals", "move", "P0000001", "--institution", "h2")

    cards = run("cards", "list", group_db=True)
    assert "6212340000000019" not in cards and "621234******0019" in cards
    shown = run("cards", "show", "3100000000000001", "--json", group_db=True)
    assert json.loads(shown)["card"] == "621234******0019"
    assert "no such card" in run("cards", "show", "6200000000000000", ok=False, group_db=True)

    with sqlite3.connect(db) as connection:
        actions = connection.execute(
            "SELECT actor, action, subject FROM audit_log WHERE action NOT LIKE 'operators.%' "
            "ORDER BY seq"
        ).fetchall()
    assert actions == [
        ("mia", "psams.unbind", "1000000000000002"),
        ("mia", "terminals.replace-psam", "P0000001"),
        ("mia", "psams.disable", "1000000000000002"),
        ("mia", "terminals.move", "P0000001"),
    ]


def test_the_estate_read_by_an_auditor(tmp_path: Path) -> None:
    """institutions, parameters, PSAMs and the blacklist listed and shown by an auditor (any
    role reads); what a maker changed shows who and when."""
    db = tmp_path / "medswitch.db"
    init_demo(db, 3, personal=demo_keys(tmp_path))
    maker = as_operator(enrol(db, tmp_path / "tokens", "mia", "maker"))
    auditor = as_operator(enrol(db, tmp_path / "tokens", "avery", "auditor"))

    def run(env: dict[str, str], *args: str, group_db: bool = False) -> str:
        argv = [args[0], "--db", str(db), *args[1:]] if group_db else [*args, "--db", str(db)]
        result: Result = CliRunner().invoke(main, argv, env=env)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    run(maker, "parameters", "set", "--institution", "h1", "--floor-fen", "5000", "--count-max",
        "10", "--age-max-h", "12")
    run(maker, "blacklist", "add", "6212340000000019", "--reason", "stolen", "--note", "desk 3")
    listed = run(auditor, "institutions", "list")
    assert all(f"\n{i} " in f"\n{listed}" for i in ("centre", "h1", "h2", "b1"))
    h1 = json.loads(run(auditor, "institutions", "show", "h1", "--json"))
    assert (h1["institution_id"], h1["kind"], h1["status"]) == ("h1", "hospital", "active")
    (version,) = json.loads(run(auditor, "parameters", "list", "--json"))
    assert version == json.loads(run(auditor, "parameters", "show", "1", "--json"))
    assert (version["version"], version["scope"], version["floor_fen"]) == (
        1, "institution:h1", 5000)
    assert version["created_by"] == "mia" and version["created_at_us"] > 0
    psams = run(auditor, "psams", "list", group_db=True)
    assert "1000000000000001" in psams and "bound to P0000001" in psams
    blacklist = json.loads(run(auditor, "blacklist", "list", "--json"))
    (entry,) = blacklist["entries"]
    assert blacklist["version"] == entry["version"] >= 1
    assert (entry["application_serial"], entry["reason"], entry["note"]) == (
        "3100000000000001", "stolen", "desk 3")  # the card's serial, not its number
    refused = CliRunner().invoke(main, ["parameters", "set", "--institution", "h1",
                                        "--floor-fen", "1", "--count-max", "1", "--age-max-h",
                                        "1", "--db", str(db)], env=auditor)
    assert refused.exit_code == 1 and "avery lacks the role maker" in refused.output
    with sqlite3.connect(db) as connection:  # who, what, when
        changes = connection.execute(
            "SELECT actor, action, at_us FROM audit_log WHERE action NOT LIKE 'operators.%' "
            "ORDER BY seq").fetchall()
    assert [(who, what) for who, what, _ in changes] == [
        ("mia", "parameters.set"), ("mia", "blacklist.add")]
    assert all(at_us >= version["created_at_us"] for _, _, at_us in changes)

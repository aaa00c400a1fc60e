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

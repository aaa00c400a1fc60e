"""`medswitch operators`: the bootstrap admin, roles, scrypt hashes, logins that end with a
disable or a new password, refusals in one line; a maker cannot approve; maker-checker compares
authenticated operators, whatever name is typed."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import sqlite3
import sys
import time
from pathlib import Path

from click.testing import CliRunner, Result

from ledger.core import ReviewItem
from ledger.demo import init_demo
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from switch.cli import main
from tests.support.personal import demo_keys

PASSWORDS = {"root-admin": "admin-pass-1", "mia": "mia-pass-01", "carl": "carl-pass-1"}


class Office:
    def __init__(self, tmp: Path, *, demo: bool = False) -> None:
        self.db = tmp / "medswitch.db"
        self.tmp = tmp
        if demo:
            init_demo(self.db, 3, personal=demo_keys(tmp))
        else:
            upgrade_sqlite(self.db)

    def token(self, name: str) -> Path:
        return self.tmp / f"{name}.token"

    def run(self, *args: str, who: str | None = None, input: str | None = None) -> Result:
        token = self.token(who) if who else self.tmp / "nobody.token"
        return CliRunner().invoke(
            main, [*args, "--db", str(self.db), "--token-file", str(token)], input=input
        )

    def login(self, name: str, password: str | None = None) -> Result:
        return self.run("operators", "login", name, who=name,
                        input=(password or PASSWORDS[name]) + "\n")

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db) as connection:
            return connection.execute(sql).fetchall()


def twice(password: str) -> str:
    return f"{password}\n{password}\n"


def test_bootstrap_roles_logins_and_their_end(tmp_path: Path) -> None:
    office = Office(tmp_path)
    first = office.run("operators", "add", "mia", "--role", "maker", input=twice("mia-pass-01"))
    assert first.exit_code == 1 and "the first operator is an admin" in first.output
    boot = office.run("operators", "add", "root-admin", "--role", "admin",
                      input=twice(PASSWORDS["root-admin"]))
    assert boot.exit_code == 0, boot.output
    stranger = office.run("operators", "add", "mia", "--role", "maker", input=twice("x" * 12))
    assert stranger.exit_code == 1 and "operators login" in stranger.output
    wrong = office.login("root-admin", "not-the-password")
    assert wrong.exit_code == 1 and "wrong operator name or password" in wrong.output
    assert office.login("root-admin").exit_code == 0
    short = office.run("operators", "add", "mia", "--role", "maker", who="root-admin",
                       input=twice("short"))
    assert short.exit_code == 1 and "at least 8 characters" in short.output
    for name, role in (("mia", "maker"), ("carl", "checker")):
        added = office.run("operators", "add", name, "--role", role, who="root-admin",
                           input=twice(PASSWORDS[name]))
        assert added.exit_code == 0, added.output
    (stored,) = office.rows("SELECT password_hash FROM operators WHERE name = 'mia'")
    assert str(stored[0]).startswith("scrypt$16384$8$1$") and "mia-pass" not in str(stored[0])
    listing = office.run("operators", "list", who="root-admin").output
    assert "carl" in listing and "checker" in listing and "mia" in listing

    assert office.login("mia").exit_code == 0
    assert office.run("operators", "whoami", who="mia").output == "mia (maker)\n"
    not_admin = office.run("operators", "disable", "carl", who="mia")
    assert not_admin.exit_code == 1 and "lacks the role admin" in not_admin.output
    # A new password ends the logins made with the old one.
    changed = office.run("operators", "passwd", who="mia",
                         input="mia-pass-01\n" + twice("mia-pass-02"))
    assert changed.exit_code == 0, changed.output
    assert "unknown or expired" in office.run("operators", "whoami", who="mia").output
    assert office.login("mia", "mia-pass-02").exit_code == 0
    # Disabling ends them at once, and no login is possible any more.
    assert office.run("operators", "disable", "mia", who="root-admin").exit_code == 0
    assert "unknown or expired" in office.run("operators", "whoami", who="mia").output
    assert office.login("mia", "mia-pass-02").exit_code == 1
    actions = office.rows("SELECT actor, action, subject FROM audit_log ORDER BY seq")
    assert ("root-admin", "operators.login-refused", "root-admin") in actions
    assert ("root-admin", "operators.disable", "mia") in actions
    assert ("mia", "operators.passwd", "mia") in actions


def test_a_maker_cannot_approve_nor_approve_under_another_name(tmp_path: Path) -> None:
    office = Office(tmp_path, demo=True)

    async def item() -> None:
        ledger = SqliteLedger.open(office.db)
        try:
            await ledger.add_review(ReviewItem("d" * 32, "counter_gap", "psam 000000000001", 0))
        finally:
            await ledger.close()

    asyncio.run(item())
    office.run("operators", "add", "root-admin", "--role", "admin",
               input=twice(PASSWORDS["root-admin"]))
    office.login("root-admin")
    for name, roles in (("mia", ("maker",)), ("carl", ("maker", "checker"))):
        flags = [a for role in roles for a in ("--role", role)]
        office.run("operators", "add", name, *flags, who="root-admin",
                   input=twice(PASSWORDS[name]))
        assert office.login(name).exit_code == 0
    proposed = office.run("review", "adjust", "dddddd", "--debit", "pool:centre", "--credit",
                          "payins:h1", "--amount", "1.00", who="carl")
    assert proposed.exit_code == 0, proposed.output
    maker_only = office.run("review", "approve-adjustment", "1", who="mia")
    assert maker_only.exit_code == 1 and "mia lacks the role checker" in maker_only.output
    typed = office.run("review", "approve-adjustment", "1", "--operator", "mia", who="carl")
    assert typed.exit_code == 1 and "not the authenticated operator (carl)" in typed.output
    same = office.run("review", "approve-adjustment", "1", who="carl")
    assert same.exit_code == 1 and "different operator" in same.output
    assert office.rows("SELECT status FROM approvals") == [("pending",)]


def test_key_steps_need_a_logged_in_custodian_once_there_are_operators(tmp_path: Path) -> None:
    office = Office(tmp_path)  # the key home holds the deployment's database
    blank = CliRunner().invoke(main, ["keys", "--home", str(tmp_path), "component",
                                      "--custodian", "kim", "--out", str(tmp_path / "first")])
    assert blank.exit_code == 0, blank.output  # no operators yet: the blank deployment's steps
    office.run("operators", "add", "root-admin", "--role", "admin",
               input=twice(PASSWORDS["root-admin"]))
    office.login("root-admin")
    for name, role in (("mia", "maker"), ("kim", "key_custodian")):
        office.run("operators", "add", name, "--role", role, who="root-admin",
                   input=twice(f"{name}-pass-01"))
        assert office.login(name, f"{name}-pass-01").exit_code == 0

    def component(who: str | None, *typed: str) -> Result:
        token = office.token(who) if who else tmp_path / "nobody.token"
        return CliRunner().invoke(
            main, ["keys", "--home", str(tmp_path), *typed, "component", "--custodian", "kim",
                   "--out", str(tmp_path / f"{who}.component")],
            env={"MEDSWITCH_OPERATOR_TOKEN_FILE": str(token)},
        )

    assert "no operator logged in" in component(None).output
    assert "mia lacks the role key_custodian" in component("mia").output
    assert "not the authenticated operator (kim)" in component("kim", "--operator", "lee").output
    assert component("kim").exit_code == 0
    def keys(who: str | None, *args: str) -> Result:
        token = office.token(who) if who else tmp_path / "nobody.token"
        return CliRunner().invoke(main, ["keys", "--home", str(tmp_path), *args],
                                  env={"MEDSWITCH_OPERATOR_TOKEN_FILE": str(token)})

    for read in (["list"], ["policy"], ["age"]):  # reads: any logged-in operator
        assert "no operator logged in" in keys(None, *read).output
        assert keys("mia", *read).exit_code == 0, keys("mia", *read).output
    for asked in (["rotate-tmks", "--help"], ["key-card", "status", "--help"],
                  ["generate", "x/y", "-h"]):  # a command's help, before any login
        helped = keys(None, *asked)
        assert helped.exit_code == 0 and helped.output.startswith("Usage: "), helped.output
    steps = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert steps[-1]["who"] == "kim"


def on_a_terminal(argv: list[str], env: dict[str, str], typed: list[str]) -> str:
    """`argv` run on a pseudo-terminal (as an operator at a console): each of ``typed`` is
    entered after the next prompt (a line ending in ": "); everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, its standard streams the terminal
        os.execve(argv[0], argv, env)
    said, deadline = b"", time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the command ended: the terminal is gone
                break
            if not chunk:
                break
            said += chunk
            if typed and said.rstrip(b" ").endswith(b":"):
                os.write(fd, typed.pop(0).encode() + b"\n")
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert not typed, said
    return said.decode(errors="replace") + f"\nexit {os.waitstatus_to_exitcode(status)}"


def test_a_command_on_a_terminal_asks_for_the_operator(tmp_path: Path) -> None:
    office = Office(tmp_path, demo=True)
    office.run("operators", "add", "root-admin", "--role", "admin",
               input=twice(PASSWORDS["root-admin"]))
    office.login("root-admin")
    office.run("operators", "add", "ava", "--role", "auditor", who="root-admin",
               input=twice("ava-pass-01"))
    medswitch = str(Path(sys.executable).parent / "medswitch")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path),
           "MEDSWITCH_OPERATOR_TOKEN_FILE": str(tmp_path / "no.token")}  # no login: a prompt
    argv = [medswitch, "review", "list", "--db", str(office.db)]
    said = on_a_terminal(argv, env, ["ava", "ava-pass-01"])
    assert "operator: " in said and "ava, your password: " in said
    assert "ava-pass-01" not in said  # not echoed
    assert "0 item(s)" in said and said.endswith("exit 0")
    wrong = on_a_terminal(argv, env, ["ava", "not-her-password"])
    assert "wrong operator name or password" in wrong and wrong.endswith("exit 1")
    logins = office.rows("SELECT actor, action FROM audit_log WHERE actor = 'ava' ORDER BY seq")
    assert logins[-2:] == [("ava", "operators.login"), ("ava", "operators.login-refused")]

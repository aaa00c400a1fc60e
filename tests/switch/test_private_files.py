"""Data at rest (issue 22 finding 8a): the deployment's home is 0700 and the files holding
cardholders, card numbers and keys 0600 — made so by `demo init`, `ledger migrate` and the
daemon's start, and tightened when an earlier deployment left them looser."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from ledger.migrate import upgrade_sqlite
from switch.cli import main
from switch.demo.keys import provision, write_config
from tests.support.daemon import make_database, sign_on_once
from tests.support.serve import serving


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_demo_init_and_ledger_migrate_create_private_files(tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "new-home" / "medswitch.db"
    result = runner.invoke(main, ["demo", "init", "--db", str(db), "--cardholders", "3"])
    assert result.exit_code == 0, result.output
    assert mode(db.parent) == 0o700
    assert mode(db) == 0o600
    migrated = tmp_path / "other" / "ledger.db"
    result = runner.invoke(main, ["ledger", "migrate", "--db", str(migrated)])
    assert result.exit_code == 0, result.output
    assert (mode(migrated.parent), mode(migrated)) == (0o700, 0o600)


def test_an_earlier_databases_files_are_tightened_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        held = sqlite3.connect(db)  # keeps the WAL and its index in place
        held.execute("SELECT * FROM t").fetchall()
    try:
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).chmod(0o644)
        upgrade_sqlite(db)
        for suffix in ("", "-wal", "-shm"):
            assert mode(db.with_name(db.name + suffix)) == 0o600, suffix
    finally:
        held.close()


def test_the_daemon_makes_its_home_and_files_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    make_database(home / "medswitch.db", {"POS00001": "pos"})
    with sqlite3.connect(home / "medswitch.db") as db:
        db.execute("PRAGMA journal_mode=WAL")  # as the daemon left it
    asyncio.run(provision(home, ["POS00001"]))
    write_config(home, terminal_port=0, http_port=0)
    for name in ("medswitch.db", "keys.jsonl", "audit.jsonl"):
        (home / name).chmod(0o644)  # as an earlier deployment left them
    with serving(home) as (process, ports):
        assert asyncio.run(sign_on_once(ports.terminal)).response_code == "00"
        assert mode(home) == 0o700
        for name in ("medswitch.db", "medswitch.db-wal", "medswitch.db-shm", "keys.jsonl"):
            assert mode(home / name) == 0o600, name  # the WAL is being written now
        assert mode(home / "audit.jsonl") == 0o600
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_a_shared_directory_is_never_taken_for_a_home(tmp_path: Path) -> None:
    from switch.key_home import private_home

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    mask = os.umask(0o022)
    try:
        private_home(shared)
        fresh = private_home(tmp_path / "new" / "home")
    finally:
        os.umask(mask)
    assert mode(shared) == 0o777 and shared.stat().st_mode & 0o1000
    assert mode(fresh) == 0o700

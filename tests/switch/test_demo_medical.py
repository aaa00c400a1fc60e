"""The demo's medical reference data: created once, then left as it is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ledger.demo import init_demo
from switch.demo import medical as demo_medical
from tests.support.personal import demo_keys


def test_provision_creates_catalogue_policy_and_credentials_once(tmp_path: Path) -> None:
    database = tmp_path / "medswitch.db"
    init_demo(database, 2, personal=demo_keys(database.parent))
    now = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    created = demo_medical.provision(tmp_path, database, now)
    assert any("catalogue" in c for c in created) and any("policy 2027" in c for c in created)
    credentials = tmp_path / demo_medical.CREDENTIALS_FILE
    assert credentials.stat().st_mode & 0o077 == 0  # the tokens are secrets
    assert len(credentials.read_text().splitlines()) == 11  # a comment and 10 institutions
    assert demo_medical.provision(tmp_path, database, now) == []


def test_the_demo_stores_the_example_policy_of_the_spec(tmp_path: Path) -> None:
    """specs/medical-files.md §3's example is `EXAMPLE`, and the demo stores it (this year)."""
    from ledger.medical.policy import EXAMPLE, parse_policy
    from ledger.medical.sql_reference import SqlDirectory
    from ledger.medical.sql_store import sqlite_engine
    from tests.support.spec_examples import examples

    spec = examples("medical-files.md")["policy"]
    assert spec == EXAMPLE
    database = tmp_path / "medswitch.db"
    init_demo(database, 2, personal=demo_keys(database.parent))
    demo_medical.provision(tmp_path, database, dt.datetime(2027, 3, 1, tzinfo=dt.UTC))
    engine = sqlite_engine(database)
    try:
        stored = SqlDirectory(engine).policy(2027)
    finally:
        engine.dispose()
    assert stored == parse_policy(spec.replace("year = 2026", "year = 2027"))

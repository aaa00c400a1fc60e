"""The demo's hospitals and pharmacies keep their levels (the medical policy needs them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger.demo import init_demo
from tests.support.personal import demo_keys


def test_medical_institutions_have_levels(tmp_path: Path) -> None:
    init_demo(tmp_path / "demo.db", 2, personal=demo_keys(tmp_path))
    with sqlite3.connect(tmp_path / "demo.db") as connection:
        rows = connection.execute(
            "SELECT id, level FROM institutions WHERE kind IN ('hospital', 'pharmacy')"
        ).fetchall()
    assert rows and all(level in (1, 2, 3) for _, level in rows)

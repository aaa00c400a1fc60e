"""Cardholders written in clear before revision 0009 are sealed by `seal_clear_cardholders`:
afterwards the file holds neither their names nor their ID numbers, and they open again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

from ledger.migrate import upgrade_sqlite
from ledger.personal import Person, people, seal_clear_cardholders
from tests.support.personal import demo_keys

CLEAR = {f"P{n:07d}": Person(f"11010119900101{n:04d}", f"旧持卡人{n}") for n in range(1, 40)}


def test_clear_rows_of_an_earlier_revision_are_sealed_and_leave_no_trace(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    upgrade_sqlite(db, "0008_medical_person_writes")
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("INSERT INTO institutions (id, kind, name) VALUES ('u1', 'unit', 'U')")
        connection.executemany(
            "INSERT INTO cardholders (id, ssn, name, category, unit_id)"
            " VALUES (?, ?, ?, 'employed', 'u1')",
            [(i, p.ssn, p.name) for i, p in CLEAR.items()],
        )
    upgrade_sqlite(db)
    keys = demo_keys(tmp_path)
    engine = create_engine(f"sqlite:///{db}")
    try:
        assert asyncio.run(seal_clear_cardholders(engine, keys)) == len(CLEAR)
        assert asyncio.run(seal_clear_cardholders(engine, keys)) == 0  # once
        assert asyncio.run(people(engine, keys, CLEAR)) == CLEAR
    finally:
        engine.dispose()
    data = b"".join(path.read_bytes() for path in tmp_path.glob("old.db*"))
    for person in CLEAR.values():
        assert person.ssn.encode() not in data and person.name.encode() not in data

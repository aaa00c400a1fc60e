"""Unsynced calls (`Call(..., synced=False)`: the reply cache's writes on SQLite): a batch of
nothing else commits without an fsync (synchronous=NORMAL); any batch with other work commits
with FULL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from ledger.writer.jobs import Call, Job
from ledger.writer.store import SqliteStore

CALL, CALL_UNSYNCED = True, False  # synced or not

NORMAL, FULL = 1, 2


def synchronous(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


def test_a_batch_of_unsynced_calls_alone_skips_the_fsync(tmp_path: Path) -> None:
    async def main() -> None:
        ledger = SqliteLedger.open(tmp_path / "l.db")
        try:
            writer = ledger.writer
            assert await writer.submit(Call(synchronous)) == FULL
            assert await writer.submit(Call(synchronous, synced=False)) == NORMAL
            assert await writer.submit(Call(synchronous, synced=False)) == NORMAL
            assert await writer.submit(Call(synchronous)) == FULL
        finally:
            await ledger.close()

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_unsynced_calls_with_other_work_are_fsynced_with_it(tmp_path: Path) -> None:
    upgrade_sqlite(tmp_path / "l.db")
    store = SqliteStore(tmp_path / "l.db")
    store.connect()
    try:
        for kinds, expected in (
            ((CALL_UNSYNCED,), NORMAL),
            ((CALL_UNSYNCED, CALL), FULL),
            ((CALL_UNSYNCED, CALL_UNSYNCED), NORMAL),
            ((CALL, CALL_UNSYNCED), FULL),
        ):
            jobs = [Job(Call(synchronous, synced=kind)) for kind in kinds]
            store.execute(jobs)
            store.commit()
            assert [job.value for job in jobs] == [expected] * len(kinds), kinds
    finally:
        store.disconnect()


def test_unsynced_calls_gathered_with_other_work_commit_first_on_their_own(
    tmp_path: Path,
) -> None:
    upgrade_sqlite(tmp_path / "l.db")
    store = SqliteStore(tmp_path / "l.db")
    delivered: list[list[object]] = []
    writer = store.writer(deliver=lambda jobs: delivered.append([job.value for job in jobs]))
    store.connect()
    try:
        kinds = (CALL, CALL_UNSYNCED, CALL, CALL_UNSYNCED)
        writer.run_batch([Job(Call(synchronous, synced=kind)) for kind in kinds])
    finally:
        store.disconnect()
    assert delivered == [[NORMAL, NORMAL], [FULL, FULL]]  # the replies first, without an fsync

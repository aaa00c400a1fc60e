"""One SQLite writer per file: given the ledger's writer, the medical store's writes run as jobs
on it — in the same transaction and the same durable commit as the ledger's posts of the group —
and a medical write that fails (even after writing) fails alone, rolled back to its savepoint."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ledger.core import Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.medical.accumulators import Totals
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from ledger.sqlite_ledger import SqliteLedger
from ledger.writer.jobs import Call

ACCOUNTS = [new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1"), new_account(K.PERSONAL_FUND, "c1")]
WAIT_S = 10.0


def _offline_count(path: Path, key: str) -> int:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT count(*) FROM medical_offline_counts WHERE key = ?", (key,))
        return int(found.fetchone()[0])


def _wait_until(test: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not test() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert test()


def test_wiring_gives_the_store_no_writer_of_its_own(tmp_path: Path) -> None:
    async def go() -> None:
        ledger = SqliteLedger.open(tmp_path / "l.db")
        engine = sqlite_engine(tmp_path / "l.db")
        shared = SqlMedicalStore(engine, ledger_writer=ledger.writer)
        own = SqlMedicalStore(engine)
        assert shared.posts_with_ledger and not own.posts_with_ledger
        assert own.writer is not None and own.writer.stats is not ledger.writer.stats
        shared.close()
        own.close()
        with pytest.raises(RuntimeError, match="closed"):
            shared.writer.run(lambda db: None)
        assert await ledger.balances(["pf:c1"]) == {}  # closing the store left the ledger open
        await ledger.close()
        engine.dispose()

    asyncio.run(go())


def test_medical_and_ledger_writes_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "l.db"

    async def go() -> None:
        ledger = SqliteLedger.open(path)
        engine = sqlite_engine(path)
        store = SqlMedicalStore(engine, ledger_writer=ledger.writer)
        writer = ledger.writer
        await ledger.open_accounts(ACCOUNTS)
        started, release = threading.Event(), threading.Event()

        def hold(db: sqlite3.Connection) -> None:  # keeps the writer busy while the group queues
            started.set()
            assert release.wait(WAIT_S)

        def wrote_then_failed(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO medical_offline_counts (key, person_id, year) VALUES ('bad', 'P', 1)"
            )
            raise ValueError("after writing")

        def refused(_view: Totals) -> Totals:
            raise LookupError("before writing")

        pool = ThreadPoolExecutor(4)
        loop = asyncio.get_running_loop()
        held = loop.run_in_executor(pool, writer.run, Call(hold))
        assert await asyncio.to_thread(started.wait, WAIT_S)
        batches = writer.stats.batches + 1  # the hold's, once released
        calls: list[Any] = [
            loop.run_in_executor(pool, store.post_offline, "good", "P", 2026, lambda v: Totals(1)),
            loop.run_in_executor(pool, store.writer.run, wrote_then_failed),
            loop.run_in_executor(pool, store.post_offline, "no", "P", 2026, refused),
        ]
        post = asyncio.ensure_future(ledger.post([Transfer("t1", "contrib:u1", "pf:c1", 5, 1)]))
        await asyncio.to_thread(_wait_until, lambda: writer.waiting == 4)
        release.set()
        await held
        done = await asyncio.gather(*calls, post, return_exceptions=True)
        assert done[0] is True
        assert isinstance(done[1], ValueError) and str(done[1]) == "after writing"
        assert isinstance(done[2], LookupError)
        assert done[3] == [TransferResult.CREATED]
        assert writer.stats.batches == batches + 1  # one commit for all four
        assert writer.stats.commits_failed == 0  # the failures stayed inside their savepoints
        assert store.accumulators("P", 2026)[0] == Totals(1)
        assert (await ledger.balances(["pf:c1"]))["pf:c1"].credits_posted_fen == 5
        pool.shutdown()
        store.close()
        await ledger.close()
        engine.dispose()

    asyncio.run(go())
    assert _offline_count(path, "good") == 1  # durable on the file
    assert _offline_count(path, "bad") == 0  # rolled back to its savepoint


def test_a_closed_ledger_refuses_medical_writes(tmp_path: Path) -> None:
    async def go() -> SqlMedicalStore:
        ledger = SqliteLedger.open(tmp_path / "l.db")
        store = SqlMedicalStore(sqlite_engine(tmp_path / "l.db"), ledger_writer=ledger.writer)
        assert store.post_offline("k", "P", 2026, lambda v: Totals(2)) is True
        await ledger.close()
        return store

    store = asyncio.run(go())
    with pytest.raises(RuntimeError, match="closed"):
        store.post_offline("k2", "P", 2026, lambda v: Totals(2))
    assert store.accumulators("P", 2026)[0] == Totals(2)
    store.close()
    store.engine.dispose()

"""The sessions' and terminals' caches read without a coroutine (``kept``): what ``get`` would
return from the cache, or ``None`` to send the caller to ``get``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from unittest import mock

import switch.sessions as sessions_module
from hsm.interface import SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from routing.context import TerminalRecord
from switch.session_store import SqliteSessionKeys
from switch.sessions import Sessions, SharedSessions, SqliteTerminals, SqlTerminals
from tests.support.daemon import make_database


def _keys(version: int = 1) -> SignOnKeys:
    def ref(usage: KeyUsage) -> KeyRef:
        return KeyRef(f"term/P1/{usage.value}", version, usage, "ABCDEF")

    return SignOnKeys(b"", ref(KeyUsage.PIK), ref(KeyUsage.MAK), ref(KeyUsage.TDK))


def test_sessions_kept_is_what_get_finds_in_the_cache(tmp_path: Path) -> None:
    async def main() -> None:
        make_database(tmp_path / "m.db", {"P1": "pos"})
        sessions = Sessions(MemoryKeyStore(), SqliteSessionKeys(tmp_path / "m.db"))
        assert sessions.kept("P1") is None
        await sessions.offer("P1", _keys())
        assert sessions.kept("P1") is None  # pending: not the keys requests are MACed under
        assert await sessions.get("P1") is None
        await sessions._sets.promote("P1", 1)  # as proven() does once a request verifies
        restarted = Sessions(MemoryKeyStore(), SqliteSessionKeys(tmp_path / "m.db"))
        keys = await restarted.get("P1")
        assert keys == _keys() and restarted.kept("P1") is keys
        await restarted.forget("P1")
        assert restarted.kept("P1") is None and await restarted.get("P1") is None

    asyncio.run(main())


def test_shared_sessions_never_keep(tmp_path: Path) -> None:
    async def main() -> None:
        make_database(tmp_path / "m.db", {"P1": "pos"})
        store = SqliteSessionKeys(tmp_path / "m.db")
        sessions = SharedSessions(MemoryKeyStore(), store)
        await sessions.offer("P1", _keys())
        await store.promote("P1", 1)
        assert await sessions.get("P1") == _keys()
        assert sessions.kept("P1") is None  # every message reads the shared store

    asyncio.run(main())


def test_terminals_kept_is_the_cached_record() -> None:
    terminals = SqliteTerminals(Path("/nonexistent/terminals.db"))
    assert terminals.kept("P1") is None
    record = TerminalRecord("P1", "H001", "pos", "active", "000001")
    terminals._cache["P1"] = record
    assert terminals.kept("P1") is record
    assert asyncio.run(terminals.get("P1")) is record


def test_kept_terminals_stand_until_the_estate_count_moves(tmp_path: Path) -> None:
    """With ``keep_s``, a due check reads the estate's change count, not the records: a batch
    written behind the daemon's back (no count) is not seen until asked for (``refresh``), a
    disabled terminal (the count moves) is seen at its next use."""

    async def main() -> None:
        path = tmp_path / "m.db"
        make_database(path, {"P1": "pos"})
        terminals = SqliteTerminals(path, keep_s=0.0)
        try:
            first = await terminals.get("P1")
            assert first is not None and first.active and first.batch == "000001"
            with sqlite3.connect(path) as connection:
                connection.execute("UPDATE terminals SET batch_no = 7 WHERE id = 'P1'")
            assert await terminals.get("P1") is first  # the count has not moved
            assert (await terminals.get("P1", refresh=True)).batch == "000007"  # type: ignore[union-attr]
            with sqlite3.connect(path) as connection:
                connection.execute("UPDATE terminals SET status = 'disabled' WHERE id = 'P1'")
            assert terminals.kept("P1") is None  # due: ``kept`` sends the caller to ``get``
            disabled = await terminals.get("P1")
            assert disabled is not None and disabled.status == "disabled"
        finally:
            terminals.close()

    asyncio.run(main())


def test_uses_due_at_once_read_the_count_once(tmp_path: Path) -> None:
    """Elsewhere than the embedded file (PostgreSQL) the count is read in a thread, once for
    every use that finds it due at the same time."""
    path = tmp_path / "m.db"
    make_database(path, {f"P{n}": "pos" for n in range(20)})
    opened: list[int] = []

    def connect() -> sqlite3.Connection:
        opened.append(1)
        return sqlite3.connect(path)

    async def main() -> None:
        terminals = SqlTerminals(connect, keep_s=0.0)  # every use finds the count due
        for n in range(20):
            assert await terminals.get(f"P{n}") is not None
        assert len(opened) == 20
        found = await asyncio.gather(*(terminals.get(f"P{n}") for n in range(20)))
        assert [r.terminal_id for r in found if r is not None] == [f"P{n}" for n in range(20)]
        assert len(opened) == 21  # one read of the count, no record read again

    asyncio.run(main())


def test_a_change_between_a_records_reads_is_not_kept_unseen(tmp_path: Path) -> None:
    """A record is read after the change count it is kept under: a change committed between
    the two reads (here: after the first) moves the count past the kept one, so the next
    check forgets the record (read the other way round, the old record was kept under the new
    count until the estate changed again)."""
    path = tmp_path / "m.db"
    make_database(path, {"P1": "pos"})
    meddled: list[int] = []

    class Rows(list[tuple[object, ...]]):
        def fetchone(self) -> tuple[object, ...] | None:
            return self[0] if self else None

    class Meddling:
        def __init__(self) -> None:
            self.connection = sqlite3.connect(path)

        def execute(self, sql: str, parameters: object = ()) -> Rows:
            cursor = Rows(self.connection.execute(sql, parameters).fetchall())  # type: ignore[arg-type]
            if not meddled:  # another process disables the terminal after the first read
                meddled.append(1)
                with sqlite3.connect(path) as other:
                    other.execute("UPDATE terminals SET status = 'disabled' WHERE id = 'P1'")
            return cursor

        def close(self) -> None:
            self.connection.close()

    async def main() -> None:
        terminals = SqlTerminals(Meddling, keep_s=0.0)  # every use finds the count due
        await terminals.get("P1")
        record = await terminals.get("P1")
        assert record is not None and record.status == "disabled"

    asyncio.run(main())


def test_a_read_under_way_when_a_change_is_made_here_keeps_nothing(tmp_path: Path) -> None:
    """A change made through this process (the admin API) forgets the kept records at once; a
    read begun before it — the old record, the old count — answers its own caller but is not
    kept, so the next message reads the change (kept, it was served for the next 5 ms)."""
    path = tmp_path / "m.db"
    make_database(path, {"P1": "pos"})
    read, release = threading.Event(), threading.Event()

    class Rows(list[tuple[object, ...]]):
        def fetchone(self) -> tuple[object, ...] | None:
            return self[0] if self else None

    class Slow:  # the record read, then its answer held until the change is made
        def __init__(self) -> None:
            self.connection = sqlite3.connect(path)

        def execute(self, sql: str, parameters: object = ()) -> Rows:
            rows = Rows(self.connection.execute(sql, parameters).fetchall())  # type: ignore[arg-type]
            if "FROM terminals" in sql and not read.is_set():
                read.set()
                release.wait(10)
            return rows

        def close(self) -> None:
            self.connection.close()

    async def main() -> None:
        terminals = SqlTerminals(Slow, keep_s=60.0)
        reading = asyncio.ensure_future(terminals.get("P1"))
        assert await asyncio.to_thread(read.wait, 10)  # the old record read, not yet answered
        with sqlite3.connect(path) as other:  # the admin API's change, then its forget()
            other.execute("UPDATE terminals SET status = 'disabled' WHERE id = 'P1'")
        terminals.forget()
        release.set()
        old = await reading
        assert old is not None and old.active  # what it read, for the message that asked
        assert terminals.kept("P1") is None
        record = await terminals.get("P1")
        assert record is not None and record.status == "disabled"

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_a_count_read_elsewhere_keeps_the_records_or_forgets_them() -> None:
    """``saw_count``: the estate's count read by another statement (on PostgreSQL, with the
    key sets), trusted ``keep_s`` from when that statement was sent."""
    terminals = SqlTerminals(lambda: None, keep_s=0.005)
    record = TerminalRecord("P1", "H001", "pos", "active", "000001")
    terminals.saw_count(7, time.monotonic())
    terminals._cache["P1"] = record
    assert terminals.kept("P1") is record
    terminals.saw_count(7, time.monotonic() - 0.010)  # an older read: changes nothing
    assert terminals.kept("P1") is record
    terminals.saw_count(8, time.monotonic())  # moved: forgotten
    assert terminals.kept("P1") is None


def test_a_record_read_before_a_change_is_not_trusted_on_a_newer_counts_time() -> None:
    """A record read under count 1 whose reply comes after a key-set read sent later has seen
    count 2 (the record's terminal disabled between): the record is kept under count 1, but
    must be trusted only ``keep_s`` from when its own read was sent — not from the newer read's
    time, which would serve the old record 5 ms and more after the change was committed."""
    now = [100.0]
    state = {"count": 1, "status": "active"}
    inside, release = threading.Event(), threading.Event()

    class Rows(list[tuple[object, ...]]):
        def fetchone(self) -> tuple[object, ...] | None:
            return self[0] if self else None

    class Connection:
        def execute(self, sql: str, parameters: object = ()) -> Rows:
            if "directory_version" in sql:
                return Rows([(state["count"],)])
            row = Rows([("P1", "H001", "pos", state["status"], 1, None)])
            if not inside.is_set():  # the first record read: held until the change is seen
                inside.set()
                assert release.wait(5)
            return row

        def close(self) -> None:
            pass

    async def main() -> TerminalRecord | None:
        terminals = SqlTerminals(Connection, keep_s=0.005)
        reading = asyncio.ensure_future(terminals.get("P1"))  # sent at 100.000, count 1
        assert await asyncio.to_thread(inside.wait, 5)
        state.update(count=2, status="disabled")  # committed at 100.001
        now[0] = 100.002
        terminals.saw_count(2, 100.002)  # a key-set read sent after the change
        release.set()
        first = await reading
        assert first is not None and first.status == "active"  # read before the change
        now[0] = 100.0065  # 5.5 ms after the change's commit
        return await terminals.get("P1")

    with mock.patch.object(sessions_module.time, "monotonic", lambda: now[0]):
        record = asyncio.run(main())
    assert record is not None and record.status == "disabled"

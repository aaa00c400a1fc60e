"""The sessions' and terminals' caches read without a coroutine (``kept``): what ``get`` would
return from the cache, or ``None`` to send the caller to ``get``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hsm.interface import SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from routing.context import TerminalRecord
from switch.session_store import SqliteSessionKeys
from switch.sessions import Sessions, SharedSessions, SqliteTerminals
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

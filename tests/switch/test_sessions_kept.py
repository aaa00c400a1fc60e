"""The sessions' and terminals' caches read without a coroutine (``kept``): what ``get`` would
return from the cache, or ``None`` to send the caller to ``get``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hsm.interface import SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from routing.context import TerminalRecord
from switch.sessions import Sessions, SharedSessions, SqliteTerminals


def _keys() -> SignOnKeys:
    def ref(usage: KeyUsage) -> KeyRef:
        return KeyRef(f"term/P1/{usage.value}", 1, usage)

    return SignOnKeys(b"", ref(KeyUsage.PIK), ref(KeyUsage.MAK), ref(KeyUsage.TDK))


def test_sessions_kept_is_what_get_finds_in_the_cache() -> None:
    async def main() -> None:
        sessions = Sessions(MemoryKeyStore())
        assert sessions.kept("P1") is None
        keys = _keys()
        sessions.remember("P1", keys)
        assert sessions.kept("P1") is keys and await sessions.get("P1") is keys
        await sessions.forget("P1")
        assert sessions.kept("P1") is None and await sessions.get("P1") is None

    asyncio.run(main())


def test_shared_sessions_never_keep() -> None:
    sessions = SharedSessions(MemoryKeyStore())
    sessions.remember("P1", _keys())
    assert sessions.kept("P1") is None  # every message reads the shared store


def test_terminals_kept_is_the_cached_record() -> None:
    terminals = SqliteTerminals(Path("/nonexistent/terminals.db"))
    assert terminals.kept("P1") is None
    record = TerminalRecord("P1", "H001", "pos", "active", "000001")
    terminals._cache["P1"] = record
    assert terminals.kept("P1") is record
    assert asyncio.run(terminals.get("P1")) is record

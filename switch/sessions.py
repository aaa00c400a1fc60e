"""Registered terminals and their sign-on sessions.

A terminal is registered in the database (``terminals``: institution, kind, status, batch);
its TMK is the latest version of key alias ``tmk/<terminal id>`` in the key store; a sign-on
stores new working keys under ``term/<terminal id>/PIK|MAK|TDK`` (new versions) and a new batch.
The session is therefore derivable from the database and the key store: a restarted daemon
finds its terminals still signed on, with no process-local state to lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hsm.interface import SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore
from routing.context import TerminalRecord


def tmk_alias(terminal_id: str) -> str:
    return f"tmk/{terminal_id}"


def session_prefix(terminal_id: str) -> str:
    return f"term/{terminal_id}"


class SqlTerminals:
    """Terminal records in the database, cached in the process; ``connect`` opens a
    ``sqlite3``-like connection (SQLite, or PostgreSQL through ``ledger.pg_bridge``).

    Reads go to the database (a thread per call) only on a miss or when asked to ``refresh``
    (the pipeline does so before answering 77, so a batch opened by another worker is seen)."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._cache: dict[str, TerminalRecord | None] = {}

    def _get(self, terminal_id: str) -> TerminalRecord | None:
        with contextlib.closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT id, institution_id, kind, status, batch_no FROM terminals WHERE id = ?",
                (terminal_id,),
            ).fetchone()
        if row is None:
            return None
        return TerminalRecord(row[0], row[1], row[2], row[3], f"{int(row[4]):06d}")

    def _next_batch(self, terminal_id: str) -> str:
        with contextlib.closing(self._connect()) as connection, connection:
            (batch,) = connection.execute(  # one statement: atomic against other workers
                "UPDATE terminals SET batch_no = batch_no % 999999 + 1 WHERE id = ?"
                " RETURNING batch_no",
                (terminal_id,),
            ).fetchone()
        return f"{int(batch):06d}"

    def kept(self, terminal_id: str) -> TerminalRecord | None:
        """The record in the cache, without a coroutine; ``None`` when none is kept (unknown,
        or not yet read): then :meth:`get`."""
        return self._cache.get(terminal_id)

    async def get(self, terminal_id: str, *, refresh: bool = False) -> TerminalRecord | None:
        if not refresh and terminal_id in self._cache:
            return self._cache[terminal_id]
        record = await asyncio.to_thread(self._get, terminal_id)
        if len(self._cache) > 100_000:  # bounded: a flood of unknown ids cannot grow it forever
            self._cache.clear()
        self._cache[terminal_id] = record
        return record

    async def next_batch(self, terminal_id: str) -> str:
        """Open the terminal's next batch (at sign-on) and return its number."""
        batch = await asyncio.to_thread(self._next_batch, terminal_id)
        self._cache.pop(terminal_id, None)
        return batch


class SqliteTerminals(SqlTerminals):
    def __init__(self, path: Path) -> None:
        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, timeout=10.0)
            connection.execute("PRAGMA busy_timeout = 10000")
            return connection

        super().__init__(connect)


class Sessions:
    """The working keys of signed-on terminals, cached; rebuilt from the key store on a miss.

    A sign-off is remembered in the cache (``None``); with several workers,
    :class:`SharedSessions` records it in the database for all of them.
    """

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._cache: dict[str, SignOnKeys | None] = {}

    @property
    def signed_on(self) -> int:
        return sum(keys is not None for keys in self._cache.values())

    async def tmk(self, terminal_id: str) -> KeyRef | None:
        return await self._latest(tmk_alias(terminal_id), KeyUsage.TMK)

    async def latest(self, alias: str, usage: KeyUsage) -> KeyRef | None:
        """The newest stored version of ``alias`` with ``usage`` (e.g. a bank link's ZAK)."""
        return await self._latest(alias, usage)

    def remember(self, terminal_id: str, keys: SignOnKeys) -> None:
        self._cache[terminal_id] = keys

    async def forget(self, terminal_id: str) -> None:
        self._cache[terminal_id] = None

    def kept(self, terminal_id: str) -> SignOnKeys | None:
        """The keys of a signed-on terminal in the cache, without a coroutine; ``None`` when
        none are kept (not yet read, or signed off): then :meth:`get`."""
        return self._cache.get(terminal_id)

    async def get(self, terminal_id: str) -> SignOnKeys | None:
        if terminal_id in self._cache:
            return self._cache[terminal_id]
        prefix = session_prefix(terminal_id)
        mak = await self._latest(f"{prefix}/MAK", KeyUsage.MAK)
        pik = await self._latest(f"{prefix}/PIK", KeyUsage.PIK)
        if mak is None or pik is None:
            return None
        tdk = await self._latest(f"{prefix}/TDK", KeyUsage.TDK)
        keys = SignOnKeys(b"", pik, mak, tdk)
        self._cache[terminal_id] = keys
        return keys

    async def _latest(self, alias: str, usage: KeyUsage) -> KeyRef | None:
        versions = [s for s in await self._store.list(alias) if s.usage is usage]
        if not versions:
            return None
        return max(versions, key=lambda s: s.version).ref


class SharedSessions(Sessions):
    """The sessions of one of several workers: every message reads the terminal's newest
    working keys from the shared store (one query when the store has ``newest``), so a sign-on
    answered by another worker is used at once. A sign-off answered by any worker ends the keys it
    found (up to that MAK version) for every worker until a newer sign-on."""

    def __init__(self, store: KeyStore) -> None:
        super().__init__(store)
        self._off: dict[str, int] = {}

    def remember(self, terminal_id: str, keys: SignOnKeys) -> None:
        self._off.pop(terminal_id, None)
        super().remember(terminal_id, keys)

    def kept(self, terminal_id: str) -> SignOnKeys | None:
        """Never: every message reads the shared store (:meth:`get`)."""
        return None

    async def forget(self, terminal_id: str) -> None:
        keys = await self.get(terminal_id)  # the newest keys, whichever worker signed them on
        version = keys.mak.version if keys is not None else self._off.get(terminal_id, 0)
        self._off[terminal_id] = version
        sign_off = getattr(self._store, "sign_off", None)
        if sign_off is not None:
            await sign_off(terminal_id, version)
        await super().forget(terminal_id)

    async def get(self, terminal_id: str) -> SignOnKeys | None:
        prefix = session_prefix(terminal_id)
        wanted = {f"{prefix}/MAK": KeyUsage.MAK, f"{prefix}/PIK": KeyUsage.PIK}
        wanted[f"{prefix}/TDK"] = KeyUsage.TDK
        newest = getattr(self._store, "newest", None)
        off = self._off.get(terminal_id, -1)
        found: dict[str, KeyRef]
        if newest is not None:  # with the terminal's last sign-off, in the same query
            found, signed_off = await newest(wanted, terminal_id)
            off = max(off, signed_off)
        else:
            found = {}
            for alias, usage in wanted.items():
                ref = await self._latest(alias, usage)
                if ref is not None:
                    found[alias] = ref
        mak, pik, tdk = (found.get(alias) for alias in wanted)
        if mak is None or pik is None or mak.version <= off:
            return None
        cached = self._cache.get(terminal_id)
        if cached is not None and (cached.mak, cached.pik, cached.tdk) == (mak, pik, tdk):
            return cached
        keys = SignOnKeys(b"", pik, mak, tdk)
        self._cache[terminal_id] = keys
        return keys

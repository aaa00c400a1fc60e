"""Registered terminals and their sign-on sessions.

A terminal is registered in the database (``terminals``: institution, kind, status, batch);
its TMK is the latest version of key alias ``tmk/<terminal id>`` in the key store; a sign-on
stores new working keys under ``term/<terminal id>/PIK|MAK|TDK`` (new versions) and a new batch.
The session is therefore derivable from the database and the key store: a restarted daemon
finds its terminals still signed on, with no process-local state to lose.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hsm.interface import SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore
from routing.context import TerminalRecord


def tmk_alias(terminal_id: str) -> str:
    return f"tmk/{terminal_id}"


def session_prefix(terminal_id: str) -> str:
    return f"term/{terminal_id}"


class SqliteTerminals:
    """Terminal records in the embedded SQLite database, cached in the process.

    Reads go to the database (a thread per call) only on a miss or when asked to ``refresh``
    (the pipeline does so before answering 77, so a batch opened by another worker is seen)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cache: dict[str, TerminalRecord | None] = {}

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=10.0)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection

    def _get(self, terminal_id: str) -> TerminalRecord | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT id, institution_id, kind, status, batch_no FROM terminals WHERE id = ?",
                (terminal_id,),
            ).fetchone()
        if row is None:
            return None
        return TerminalRecord(row[0], row[1], row[2], row[3], f"{int(row[4]):06d}")

    def _next_batch(self, terminal_id: str) -> str:
        connection = self._connect()
        try:
            with connection:
                connection.execute(
                    "UPDATE terminals SET batch_no = batch_no % 999999 + 1 WHERE id = ?",
                    (terminal_id,),
                )
                (batch,) = connection.execute(
                    "SELECT batch_no FROM terminals WHERE id = ?", (terminal_id,)
                ).fetchone()
        finally:
            connection.close()
        return f"{int(batch):06d}"

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


class Sessions:
    """The working keys of signed-on terminals, cached; rebuilt from the key store on a miss.

    A sign-off is remembered by this process only (``None`` in the cache): with several
    workers a signed-off terminal's next message may still find its keys in another worker.
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

    def forget(self, terminal_id: str) -> None:
        self._cache[terminal_id] = None

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

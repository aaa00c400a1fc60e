"""Registered terminals and their sign-on sessions.

A terminal is registered in the database (``terminals``: institution, kind, status, batch);
its TMK is the latest version of key alias ``tmk/<terminal id>`` in the key store. A sign-on
issues new working keys under ``term/<terminal id>/PIK|MAK|TDK`` (new versions) as a *pending*
set and opens a new batch; the set becomes *current* when a request MACed under it arrives, and
until then the current set keeps serving (specs/terminal-interface.md, sign-on): an unsigned
sign-on cannot end a live session. A terminal's sign-ons take turns in the process
(:meth:`Sessions.signing_on`): the HSM numbers new keys after the newest version stored, so two
at once would be given the same version (the loser's insert failed and its keys displaced the
winner's in the HSM's key cache: the winner's requests were answered 96). The sets are kept in
a :class:`SessionStore` (``switch.session_store``), so a restarted daemon finds its terminals
still signed on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from hsm.interface import Hsm, MacAlgorithm, SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore
from messages.outcome import Outcome
from routing.context import TerminalRecord
from switch.session_store import (
    NO_KEYS,
    Change,
    KeySets,
    SessionStore,
    session_prefix,
)

__all__ = ["SessionStore", "Sessions", "SharedSessions", "SignOnLimit", "session_prefix"]
TERMINALS_MAX = 100_000  # sessions and sign-on windows kept in the process


def tmk_alias(terminal_id: str) -> str:
    return f"tmk/{terminal_id}"


class SqlTerminals:
    """Terminal records in the database, cached in the process; ``connect`` opens a
    ``sqlite3``-like connection (SQLite, or PostgreSQL through ``ledger.pg_bridge``).

    Records are read (a thread per call) on a miss and when asked to ``refresh`` (the pipeline
    does so before answering 77, so a batch opened by a promoted sign-on — here or at another
    worker — is seen); each read also reads the estate's change count (``directory_version``
    row 2, moved by triggers on every change of a terminal's institution, kind or status and of
    any institution, whoever makes it: `medswitch terminals disable`, the admin API, raw SQL).
    With ``keep_s`` (the daemon's), once that long has passed since the count was last read, the
    next use reads the count again — only the count, once for every use waiting on it — and
    forgets every kept record when it moved: a disabled terminal is answered 97 at its next
    message after the change, never served from an old record. A terminal of an institution
    that is not active reads as status ``institution_<its status>``.

    Re-reading the records themselves instead (a thread and a connection per terminal each
    time the 5 ms passed) cost the daemon some 500 µs of CPU per exchange under bench_settle.
    On PostgreSQL the count also comes with every read of key sets (``PgKeyStore``, which hands
    it to :meth:`saw_count`). A record is read after its count (the other way round, a change
    committed between the two reads was kept unseen)."""

    def __init__(self, connect: Callable[[], Any], *, keep_s: float | None = None) -> None:
        self._connect = connect
        self._cache: dict[str, TerminalRecord | None] = {}
        self._keep_s = keep_s  # None: kept until refreshed (tools and tests)
        self._version = -1  # the estate change count the kept records were read under
        self._checked = 0.0  # when it was last read (time.monotonic)
        self._counting: asyncio.Future[None] | None = None  # the count's read under way
        self._forgotten = 0  # how many times forget() was called: reads begun before keep none

    def _get(self, terminal_id: str) -> tuple[TerminalRecord | None, int]:
        with contextlib.closing(self._connect()) as connection:
            # the count first: a change committed between the two reads moves it past the
            # one the record is kept under, so it is forgotten at the next check
            version = _count(connection)
            row = connection.execute(_TERMINAL_SQL, (terminal_id,)).fetchone()
        if row is None:
            return None, version
        status = row[3] if row[5] in (None, "active") else f"institution_{row[5]}"
        return TerminalRecord(row[0], row[1], row[2], status, f"{int(row[4]):06d}"), version

    def kept(self, terminal_id: str) -> TerminalRecord | None:
        """The record in the cache, without a coroutine, while what is kept is fresh; ``None``
        when none is kept (unknown, not yet read, or due to be checked): then :meth:`get`."""
        return self._cache.get(terminal_id) if self._fresh() else None

    def _fresh(self) -> bool:
        return self._keep_s is None or time.monotonic() - self._checked <= self._keep_s

    def forget(self) -> None:
        """Read every terminal afresh from now on (a change was made through this process):
        a read under way, begun before the change, gives its caller what it read but keeps
        nothing."""
        self._cache.clear()
        self._forgotten += 1

    async def get(self, terminal_id: str, *, refresh: bool = False) -> TerminalRecord | None:
        if not refresh and terminal_id in self._cache:
            if not self._fresh():
                await self._check()  # the count only: the kept records stand unless it moved
            if terminal_id in self._cache:  # still: the count had not moved
                return self._cache[terminal_id]
        read_at, forgotten = time.monotonic(), self._forgotten
        record, version = await asyncio.to_thread(self._get, terminal_id)
        if forgotten != self._forgotten:
            return record  # forgotten meanwhile: its change may be newer than this read
        self.saw_count(version, read_at)
        if len(self._cache) > 100_000:  # bounded: a flood of unknown ids cannot grow it forever
            self._cache.clear()
        self._cache[terminal_id] = record
        return record

    def saw_count(self, version: int, read_at: float) -> None:
        """The change count as read by a statement sent at ``read_at`` (``time.monotonic``):
        what is kept is forgotten when it differs from the count it was read under (an older
        read arriving after a newer one only forgets once more); it is trusted for ``keep_s``
        after the latest read sent under that count. A count that moved is trusted from its own
        read only: a record read before a change, its reply after a newer count's, is kept
        under its own older count, and must not borrow the newer read's time."""
        if version != self._version:
            self._cache.clear()
            self._version = version
            self._checked = read_at
            return
        self._checked = max(self._checked, read_at)

    async def _check(self) -> None:
        """Reads the change count once for every use that finds it due at the same time."""
        if self._counting is None:
            self._counting = asyncio.ensure_future(self._read_count())
            self._counting.add_done_callback(self._counted)
        await asyncio.shield(self._counting)

    def _counted(self, reading: asyncio.Future[None]) -> None:
        self._counting = None

    async def _read_count(self) -> None:
        read_at = time.monotonic()
        self.saw_count(await asyncio.to_thread(self._count_afresh), read_at)

    def _count_afresh(self) -> int:
        with contextlib.closing(self._connect()) as connection:
            return _count(connection)

    def close(self) -> None:
        """Nothing held between reads here (each takes a connection and gives it back)."""


_TERMINAL_SQL = (
    "SELECT t.id, t.institution_id, t.kind, t.status, t.batch_no, i.status FROM terminals t "
    "LEFT JOIN institutions i ON i.id = t.institution_id WHERE t.id = ?"
)


def _count(connection: Any) -> int:
    """The estate's change count (-1 before the table has its row)."""
    row = connection.execute("SELECT version FROM directory_version WHERE id = 2").fetchone()
    return -1 if row is None else int(row[0])


class SqliteTerminals(SqlTerminals):
    """On the embedded file the change count is read in place, on a read-only connection of
    its own: a primary-key read in WAL mode takes microseconds and never waits for the writer,
    less than the thread hop a read elsewhere needs (as ``switch.cards.SqliteCards`` does)."""

    def __init__(self, path: Path, *, keep_s: float | None = None) -> None:
        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, timeout=10.0)
            connection.execute("PRAGMA busy_timeout = 10000")
            return connection

        super().__init__(connect, keep_s=keep_s)
        self._path = path
        self._reader: sqlite3.Connection | None = None  # opened at the first count

    async def _check(self) -> None:
        if self._reader is None:
            reader = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)
            reader.execute("PRAGMA query_only = ON")
            self._reader = reader
        read_at = time.monotonic()
        self.saw_count(_count(self._reader), read_at)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


@dataclass(frozen=True, slots=True)
class SignOnLimit:
    """Sign-ons one terminal may make: ``per_minute`` in any 60 s (more are answered 65),
    and the pending sets kept (``pending_max`` ≥ ``per_minute``: a set a sign-on issued then
    outlives the next minute's sign-ons, whoever sends them)."""

    per_minute: int = 6
    pending_max: int = 6
    window_s: float = 60.0


@dataclass
class _Turn:
    """A terminal's sign-ons taking turns: the lock, and the sign-ons holding or awaiting it."""

    lock: asyncio.Lock
    users: int = 0


class Sessions:
    """The working-key sets of signed-on terminals (:class:`KeySets`), kept in the process and
    in a :class:`SessionStore` (the database's: given, or attached by the app once it has
    opened the database), read from it on a miss. One process: the kept sets are the truth;
    with several workers, :class:`SharedSessions` reads the store for every message.

    ``store`` is the key store of the keys made by key ceremonies (TMKs, zone keys)."""

    def __init__(
        self,
        store: KeyStore,
        sets: SessionStore | None = None,
        limit: SignOnLimit | None = None,
    ) -> None:
        self._store = store
        self._set_store = sets
        self.limit = SignOnLimit() if limit is None else limit
        self._cache: dict[str, KeySets] = {}
        self._windows: dict[str, collections.deque[float]] = {}
        self._counted: Counter | None = None
        self._turns: dict[str, _Turn] = {}  # terminals with a sign-on under way or waiting

    @property
    def key_store(self) -> KeyStore:
        """The key store of the ceremonies' keys (the centre's PERSONAL_DATA among them)."""
        return self._store

    def attach(self, sets: SessionStore) -> None:
        """Keep the sets in ``sets`` unless a store was given (the app: its database's)."""
        if self._set_store is None:
            self._set_store = sets

    @property
    def _sets(self) -> SessionStore:
        if self._set_store is None:
            raise RuntimeError("sessions without a session store: attach the database's")
        return self._set_store

    def count_into(self, counter: Counter) -> None:
        """Count sign-ons by outcome (issued, refused, proven, unproven) into ``counter``."""
        self._counted = counter

    def _count(self, outcome: str, amount: int = 1) -> None:
        if self._counted is not None and amount:
            self._counted.labels(outcome).inc(amount)

    @property
    def signed_on(self) -> int:
        return sum(sets.current is not None for sets in self._cache.values())

    async def tmk(self, terminal_id: str) -> KeyRef | None:
        return await self._latest(tmk_alias(terminal_id), KeyUsage.TMK)

    async def latest(self, alias: str, usage: KeyUsage) -> KeyRef | None:
        """The newest stored version of ``alias`` with ``usage`` (e.g. a bank link's ZAK)."""
        return await self._latest(alias, usage)

    def kept(self, terminal_id: str) -> SignOnKeys | None:
        """The current keys of a terminal in the cache, without a coroutine; ``None`` when
        none are kept (not yet read, or none current): then :meth:`get`."""
        sets = self._cache.get(terminal_id)
        return None if sets is None else sets.current

    async def get(self, terminal_id: str) -> SignOnKeys | None:
        """The terminal's current keys (None: none; it may have pending ones)."""
        return (await self._key_sets(terminal_id)).current

    async def _key_sets(self, terminal_id: str) -> KeySets:
        sets = self._cache.get(terminal_id)
        if sets is None:
            sets = await self._sets.key_sets(terminal_id)
            self._keep(terminal_id, sets)
        return sets

    def _keep(self, terminal_id: str, sets: KeySets) -> None:
        if len(self._cache) >= TERMINALS_MAX and terminal_id not in self._cache:
            self._cache.clear()  # bounded; the store has them all
        self._cache[terminal_id] = sets

    def admit(self, terminal_id: str, now: datetime) -> bool:
        """May the terminal sign on now? At most ``per_minute`` admitted in any window."""
        at_s = now.timestamp()
        window = self._windows.get(terminal_id)
        if window is None:
            if len(self._windows) >= TERMINALS_MAX:
                self._windows.clear()
            window = self._windows[terminal_id] = collections.deque()
        while window and window[0] <= at_s - self.limit.window_s:
            window.popleft()
        if len(window) >= self.limit.per_minute:
            self._count("refused")
            return False
        window.append(at_s)
        return True

    @contextlib.asynccontextmanager
    async def signing_on(self, terminal_id: str) -> AsyncIterator[None]:
        """The terminal's sign-ons one at a time (the keys issued and offered inside); the
        turns kept only while a sign-on holds or waits for one (at most ``per_minute`` a
        terminal, so bounded by the sign-on limit)."""
        turn = self._turns.get(terminal_id)
        if turn is None:
            turn = self._turns[terminal_id] = _Turn(asyncio.Lock())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[terminal_id]

    async def offer(self, terminal_id: str, keys: SignOnKeys) -> str:
        """Keys a sign-on issued: pending until a request MACed under them arrives; the batch
        they open then (6 digits, for the 0810's 60.2)."""
        keys = SignOnKeys(b"", keys.pik, keys.mak, keys.tdk)  # the references, as stored
        change = await self._sets.offer(terminal_id, keys, self.limit.pending_max)
        self._changed(terminal_id, change)
        self._count("issued")
        return f"{change.batch:06d}"

    def issued(self, terminal_id: str) -> SignOnKeys | None:
        """The newest pending keys known here (what the 0810 of a sign-on is MACed under)."""
        sets = self._cache.get(terminal_id, NO_KEYS)
        return sets.pending[0] if sets.pending else None

    async def proven(
        self, terminal_id: str, hsm: Hsm, block: bytes, mac: object
    ) -> SignOnKeys | Outcome:
        """A request whose MAC the current keys did not verify: the pending set it verifies
        under, now current (for every worker and after a restart); else 22 when the terminal
        has no keys at all, A0 when it has."""
        sets = self._cache.get(terminal_id)
        if sets is None:
            sets = await self._key_sets(terminal_id)
        if not sets:
            return Outcome.RE_SIGN_ON
        if not isinstance(mac, bytes):
            return Outcome.MAC_ERROR
        for keys in sets.pending:  # bounded: pending_max
            if await hsm.verify_mac(keys.mak, MacAlgorithm.CUP_ECB, block, mac):
                change = await self._sets.promote(terminal_id, keys.mak.version)
                if change is None:  # promoted or retired meanwhile: read what holds now
                    self._keep(terminal_id, await self._sets.key_sets(terminal_id))
                else:
                    self._changed(terminal_id, change)
                    self._count("proven")
                return keys  # it verified: this request is the terminal's
        return Outcome.MAC_ERROR

    async def forget(self, terminal_id: str) -> None:
        """A sign-off: every set of the terminal ends, for every worker."""
        self._changed(terminal_id, await self._sets.end(terminal_id))

    def _changed(self, terminal_id: str, change: Change) -> None:
        self._keep(terminal_id, change.sets)
        self._count("unproven", len(change.unproven))

    async def _latest(self, alias: str, usage: KeyUsage) -> KeyRef | None:
        versions = [s for s in await self._store.list(alias) if s.usage is usage]
        if not versions:
            return None
        return max(versions, key=lambda s: s.version).ref


class SharedSessions(Sessions):
    """The sessions of one of several workers: every message reads the terminal's sets from
    the shared store (one query), so a sign-on, promotion or sign-off by another worker holds
    at once."""

    def kept(self, terminal_id: str) -> SignOnKeys | None:
        """Never: every message reads the shared store (:meth:`get`)."""
        return None

    async def get(self, terminal_id: str) -> SignOnKeys | None:
        sets = await self._sets.key_sets(terminal_id)
        self._keep(terminal_id, sets)  # what proven() then tries, for this message
        return sets.current

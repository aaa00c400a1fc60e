"""Where terminals' working-key sets live, and how a sign-on, a proven request and a sign-off
change them (specs/terminal-interface.md, sign-on).

A terminal has at most one *current* set (the keys its requests are MACed under) and up to
``pending_max`` *pending* sets (issued by sign-ons, newest first, not yet used). A request MACed
under a pending set promotes it: it becomes current, the set it replaces and every older pending
set are retired; newer pending sets stay. A sign-on beyond ``pending_max`` retires the oldest
pending set. A sign-off retires them all. Retired sets' key blocks are deleted, except each
alias's newest block, which keeps key versions from ever being issued twice (the HSM numbers a
new key after the newest stored one, and caches keys by alias and version).

The batch (60.2) goes with the keys: a sign-on's set opens the batch after the terminal's
current one, and the terminal's batch moves to it when the set is promoted (the same
transaction), so an unproven sign-on leaves the live session's batch alone too.

Backends: :class:`SqliteSessionKeys` (the embedded database: ``session_sets``, ``session_keys``
and the ``terminals`` batch, every write in a thread — no fsync on the event loop) and
``switch.pg_stores.PgKeyStore`` (PostgreSQL, shared by workers). Each holds wrapped key blocks
under the LMK and key references, never clear keys.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from hsm.errors import KeyExistsError, KeyNotFoundError
from hsm.interface import SignOnKeys
from hsm.keyblock import StoredKey
from hsm.keys import KeyRef, KeyUsage

T = TypeVar("T")
CURRENT, PENDING = "current", "pending"
SET_COLUMNS = "state, mak_version, mak_kcv, pik_version, pik_kcv, tdk_version, tdk_kcv"
KEY_COLUMNS = "alias, version, usage, kcv, created_at, block"
# The blocks of a terminal's alias that no set holds go, except the alias's newest (placeholders:
# alias, alias, the versions the sets hold).
PRUNE_BLOCKS = (
    "DELETE FROM session_keys WHERE alias = {0}"
    " AND version < (SELECT max(version) FROM session_keys WHERE alias = {1})"
    " AND version NOT IN {2}"
)
UNWRITTEN_MAX = 3 * 1024  # SQLite: blocks waiting for their sign-on's transaction


#: SQLite: the database is in WAL mode (the ledger sets it); at NORMAL a commit is not flushed
#: to disk on its own (the next checkpoint, or the ledger's next commit, flushes it): a power
#: cut may lose the last sets, whose terminals are then answered 22 or A0 and sign on again;
#: a process crash loses nothing. FULL cost four flushes per sign-on (~100 ms on the test VM).
SYNCHRONOUS = "NORMAL"


def session_prefix(terminal_id: str) -> str:
    return f"term/{terminal_id}"


@dataclass(frozen=True, slots=True)
class KeySets:
    """A terminal's working-key sets: the current one (None: none) and the pending ones,
    newest first."""

    current: SignOnKeys | None = None
    pending: tuple[SignOnKeys, ...] = ()

    def __bool__(self) -> bool:
        return self.current is not None or bool(self.pending)


NO_KEYS = KeySets()


class Change(NamedTuple):
    """A terminal's sets after a change, and the pending sets it retired unused (forged
    sign-ons, or keys their terminal never received)."""

    sets: KeySets
    unproven: tuple[SignOnKeys, ...]
    retired: tuple[SignOnKeys, ...]  # every set retired (the unproven ones and a replaced current)
    batch: int = 0  # a sign-on's: the batch its set opens once promoted


def offered(sets: KeySets, keys: SignOnKeys, pending_max: int) -> Change:
    """``keys`` issued by a sign-on: pending, the newest; the oldest beyond ``pending_max`` go."""
    pending = (keys, *sets.pending)
    dropped = pending[pending_max:]
    return Change(KeySets(sets.current, pending[:pending_max]), dropped, dropped)


def promoted(sets: KeySets, mak_version: int) -> Change | None:
    """The pending set of ``mak_version`` proven by a request; None when it is not pending
    (promoted or retired meanwhile)."""
    chosen = next((k for k in sets.pending if k.mak.version == mak_version), None)
    if chosen is None:
        return None
    older = tuple(k for k in sets.pending if k.mak.version < mak_version)
    newer = tuple(k for k in sets.pending if k.mak.version > mak_version)
    replaced = () if sets.current is None else (sets.current,)
    return Change(KeySets(chosen, newer), older, replaced + older)


def ended(sets: KeySets) -> Change:
    """A sign-off: every set goes."""
    replaced = () if sets.current is None else (sets.current,)
    return Change(NO_KEYS, sets.pending, replaced + sets.pending)


def next_batch(batch_no: int) -> int:
    return batch_no % 999_999 + 1


class SessionStore(Protocol):
    async def key_sets(self, terminal_id: str) -> KeySets: ...

    async def offer(self, terminal_id: str, keys: SignOnKeys, pending_max: int) -> Change:
        """``keys`` pending, with the batch after the terminal's current one (``batch``)."""
        ...

    async def promote(self, terminal_id: str, mak_version: int) -> Change | None:
        """The set current and its batch the terminal's; None when the set is no longer
        pending (nothing changed)."""
        ...

    async def end(self, terminal_id: str) -> Change: ...


def sets_of(terminal_id: str, rows: Sequence[Sequence[Any]]) -> KeySets:
    """Rows of ``SET_COLUMNS`` (any order) → the terminal's sets."""
    prefix = session_prefix(terminal_id)
    current, pending = None, []
    for state, mak_v, mak_kcv, pik_v, pik_kcv, tdk_v, tdk_kcv in rows:
        keys = SignOnKeys(
            b"",
            KeyRef(f"{prefix}/PIK", int(pik_v), KeyUsage.PIK, pik_kcv),
            KeyRef(f"{prefix}/MAK", int(mak_v), KeyUsage.MAK, mak_kcv),
            None if tdk_v is None else KeyRef(f"{prefix}/TDK", int(tdk_v), KeyUsage.TDK, tdk_kcv),
        )
        if state == CURRENT:
            current = keys
        else:
            pending.append(keys)
    pending.sort(key=lambda k: k.mak.version, reverse=True)
    return KeySets(current, tuple(pending))


def set_row(terminal_id: str, state: str, keys: SignOnKeys) -> tuple[Any, ...]:
    """(terminal_id, ``SET_COLUMNS``...) of a set."""
    tdk = keys.tdk
    return (
        terminal_id,
        state,
        keys.mak.version,
        keys.mak.kcv,
        keys.pik.version,
        keys.pik.kcv,
        None if tdk is None else tdk.version,
        None if tdk is None else tdk.kcv,
    )


def pruned(
    terminal_id: str, sets: KeySets, versions: Callable[[list[int]], Any]
) -> list[tuple[str, str, Any]]:
    """``PRUNE_BLOCKS``' parameters for each of the terminal's aliases: every block the
    terminal's sets do not hold goes (retired sets', and blocks of a sign-on that failed
    before its set was offered), each alias's newest excepted."""
    prefix = session_prefix(terminal_id)
    held: dict[str, list[int]] = {f"{prefix}/{u}": [] for u in ("PIK", "MAK", "TDK")}
    for keys in (*((sets.current,) if sets.current else ()), *sets.pending):
        for ref in (keys.pik, keys.mak, keys.tdk):
            if ref is not None:
                held[ref.alias].append(ref.version)
    return [(alias, alias, versions(kept)) for alias, kept in held.items()]


def stored_of(row: Sequence[Any]) -> StoredKey:
    return StoredKey(row[0], int(row[1]), KeyUsage(row[2]), row[3], row[4], row[5])


class SqliteSessionKeys:
    """Terminals' key sets and their wrapped key blocks (``term/...``: a ``KeyStore`` for the
    HSM) in the embedded database, off the event loop: one thread of its own with one
    connection, in the order asked. A sign-on is one transaction: the HSM's blocks wait in the
    process (``put``) until the sign-on's set is offered, and are written with it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="medswitch-sessions")
        self._connection: sqlite3.Connection | None = None
        self._unwritten: dict[tuple[str, int], StoredKey] = {}

    def close(self) -> None:
        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._thread.submit(close).result()
        self._thread.shutdown()

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._connection is None:
                self._connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
                self._connection.execute("PRAGMA busy_timeout = 10000")
                self._connection.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
            return work(self._connection)

        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def _read(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return await self._call(lambda connection: connection.execute(sql, parameters).fetchall())

    # -- KeyStore: the blocks ---------------------------------------------------------------
    async def get(self, alias: str, version: int) -> StoredKey:
        waiting = self._unwritten.get((alias, version))
        if waiting is not None:
            return waiting
        rows = await self._read(
            f"SELECT {KEY_COLUMNS} FROM session_keys WHERE alias = ? AND version = ?",
            (alias, version),
        )
        if not rows:
            raise KeyNotFoundError(f"no key {alias} v{version}")
        return stored_of(rows[0])

    async def put(self, stored: StoredKey) -> None:
        """Kept until the sign-on's :meth:`offer` writes it (one process writes here: the
        HSM numbered it after the newest :meth:`list` found)."""
        key = (stored.alias, stored.version)
        if key in self._unwritten:
            raise KeyExistsError(f"key {stored.alias} v{stored.version} already exists")
        if len(self._unwritten) >= UNWRITTEN_MAX:  # sign-ons that never offered: write them
            await self._call(lambda connection: _put_blocks(connection, self._take()))
        self._unwritten[key] = stored

    def _take(self) -> list[StoredKey]:
        taken, self._unwritten = list(self._unwritten.values()), {}
        return taken

    async def list(self, alias: str | None = None) -> list[StoredKey]:
        sql = f"SELECT {KEY_COLUMNS} FROM session_keys"
        if alias is None:
            rows = await self._read(sql, ())
        else:
            rows = await self._read(sql + " WHERE alias = ?", (alias,))
        found = {(r[0], int(r[1])): stored_of(r) for r in rows}
        found.update((k, v) for k, v in self._unwritten.items() if alias in (None, k[0]))
        return [found[key] for key in sorted(found)]

    # -- SessionStore: the sets --------------------------------------------------------------
    async def key_sets(self, terminal_id: str) -> KeySets:
        rows = await self._read(
            f"SELECT {SET_COLUMNS} FROM session_sets WHERE terminal_id = ?", (terminal_id,)
        )
        return sets_of(terminal_id, rows)

    async def offer(self, terminal_id: str, keys: SignOnKeys, pending_max: int) -> Change:
        blocks = self._take()

        def offer(connection: sqlite3.Connection) -> Change | None:
            return _change(
                connection, terminal_id, lambda sets: offered(sets, keys, pending_max), keys, blocks
            )

        found = await self._call(offer)
        assert found is not None
        return found

    async def promote(self, terminal_id: str, mak_version: int) -> Change | None:
        def promote(connection: sqlite3.Connection) -> Change | None:
            decide = lambda sets: promoted(sets, mak_version)  # noqa: E731
            return _change(connection, terminal_id, decide, promoting=True)

        return await self._call(promote)

    async def end(self, terminal_id: str) -> Change:
        found = await self._call(lambda connection: _change(connection, terminal_id, ended))
        assert found is not None
        return found


def _put_blocks(connection: sqlite3.Connection, blocks: Sequence[StoredKey]) -> None:
    connection.executemany(
        f"INSERT INTO session_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        [(b.alias, b.version, b.usage.value, b.kcv, b.created_at, b.block) for b in blocks],
    )


def _change(
    connection: sqlite3.Connection,
    terminal_id: str,
    decide: Callable[[KeySets], Change | None],
    added: SignOnKeys | None = None,
    blocks: Sequence[StoredKey] = (),
    *,
    promoting: bool = False,
) -> Change | None:
    """One transaction: the blocks written, the sets read, ``decide``, the change written."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        _put_blocks(connection, blocks)
        rows = connection.execute(
            f"SELECT {SET_COLUMNS} FROM session_sets WHERE terminal_id = ?", (terminal_id,)
        ).fetchall()
        change = decide(sets_of(terminal_id, rows))
        if change is not None and added is not None:
            (batch,) = connection.execute(
                "SELECT batch_no FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
            change = change._replace(batch=next_batch(int(batch)))
            connection.execute(
                f"INSERT INTO session_sets (terminal_id, {SET_COLUMNS}, batch_no)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*set_row(terminal_id, PENDING, added), change.batch),
            )
        if change is not None:
            _write(connection, terminal_id, change, promoting)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return change


def _write(
    connection: sqlite3.Connection, terminal_id: str, change: Change, promoting: bool
) -> None:
    """The retired sets and their blocks deleted; a promoted set current, its batch the
    terminal's."""
    connection.executemany(
        "DELETE FROM session_sets WHERE terminal_id = ? AND mak_version = ?",
        [(terminal_id, keys.mak.version) for keys in change.retired],
    )
    connection.executemany(
        PRUNE_BLOCKS.format("?", "?", "(SELECT value FROM json_each(?))"),
        pruned(terminal_id, change.sets, json.dumps),
    )
    current = change.sets.current
    if promoting and current is not None:
        where = (terminal_id, current.mak.version)
        connection.execute(
            "UPDATE session_sets SET state = ? WHERE terminal_id = ? AND mak_version = ?",
            (CURRENT, *where),
        )
        connection.execute(
            "UPDATE terminals SET batch_no = (SELECT batch_no FROM session_sets"
            " WHERE terminal_id = ? AND mak_version = ?) WHERE id = ?",
            (*where, terminal_id),
        )

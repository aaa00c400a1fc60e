"""The daemon's asynchronous stores on PostgreSQL (asyncpg, the worker's own pool): the session
key store, the card status register, the reversal queue's delivery state and never-repeating
numbers. The synchronous ones (cards, terminals, the medical store) run the SQLite stores' own
code over ``ledger.pg_bridge``.

Keys: terminals' working keys (aliases ``term/...``) live in the ``session_keys`` table and their
sets (pending, current: ``switch.session_store``) in ``session_sets``, so a sign-on, or the first
request under its keys, answered by one worker holds for every other; keys made by key
ceremonies (TMKs, zone keys) stay in the deployment's file key store (``medswitch keys``
writes it; they change rarely). Both hold wrapped key blocks under the LMK only, never clear keys.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

import asyncpg  # type: ignore[import-untyped]

from hsm.errors import KeyExistsError, KeyNotFoundError
from hsm.interface import SignOnKeys
from hsm.keyblock import StoredKey
from hsm.keys import KeyUsage
from hsm.keystore import KeyStore
from ledger.pg_bridge import HeldConnection
from routing.bank_context import StatusChange
from switch.bank.cards import ENDED_BEFORE, can_end, ending_status, replacement_problem
from switch.reply_store import Batcher
from switch.session_store import (
    CURRENT,
    PENDING,
    PRUNE_BLOCKS,
    SET_COLUMNS,
    Change,
    KeySets,
    ended,
    next_batch,
    offered,
    promoted,
    pruned,
    session_prefix,
    set_row,
    sets_of,
)

SESSION_PREFIX = session_prefix("")  # "term/": working keys of signed-on terminals
SESSION_LOCK = 0x7365736E  # advisory lock class: one change of a terminal's key sets at a time
_KEY_COLUMNS = "alias, version, usage, kcv, created_at, block"
BLACKLIST_LOCK = 0x626C6B6C  # advisory lock: one blacklist version at a time
_NEXT_VERSION = (
    "SELECT coalesce(greatest(max(version), max(removed_version)), 0) + 1 FROM blacklist"
)


class HeldReads(HeldConnection):
    """The key sets' reads (``PgKeyStore.key_sets``: batches, one at a time) on one connection
    of the worker's pool held between them."""

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.use(lambda connection: connection.fetch(sql, *args))
        return rows


def _stored(row: asyncpg.Record) -> StoredKey:
    return StoredKey(row[0], int(row[1]), KeyUsage(row[2]), row[3], row[4], row[5])


class Counted(Protocol):
    """What keeps records while a ``directory_version`` count stands (``switch.cards.SqlCards``:
    row 1; ``switch.sessions.SqlTerminals``: row 2)."""

    def saw_count(self, version: int, read_at: float) -> None: ...


#: The sets of the terminals asked for ($1) and both change counts of ``directory_version``
#: (cards, PSAMs and the blacklist: row 1; the estate: row 2), in one statement: one row with
#: no terminal when none of them has a set.
_SETS_AND_COUNTS = (
    f"SELECT s.terminal_id, {', '.join('s.' + c for c in SET_COLUMNS.split(', '))},"
    " c.cards, c.estate FROM (SELECT max(version) FILTER (WHERE id = 1) AS cards,"
    " max(version) FILTER (WHERE id = 2) AS estate FROM directory_version"
    " WHERE id IN (1, 2)) AS c"
    " LEFT JOIN session_sets s ON s.terminal_id = ANY($1::text[])"
)


class PgKeyStore:
    """Terminals' wrapped session keys in ``session_keys`` (``hsm.keystore.KeyStore``) and
    their key sets in ``session_sets`` (``switch.session_store.SessionStore``).

    Every read of key sets also reads the directories' change counts and hands them to
    ``cards`` and ``estate`` (``saw_count``, with the time the statement was sent): the card
    directory and the terminal records need no statement of their own to learn that nothing
    changed while such reads come at least every 5 ms (``switch.cards.KEEP_S``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        reads: HeldReads | None = None,
        *,
        cards: Counted | None = None,
        estate: Counted | None = None,
    ) -> None:
        self._pool = pool
        self._reader: asyncpg.Pool | HeldReads = pool if reads is None else reads
        self._counted = (cards, estate)
        self._set_reads: Batcher[str, KeySets] = Batcher(self._read_sets)

    async def _read_sets(self, asked: list[str]) -> list[KeySets]:
        """The sets of each terminal asked for and the change counts, in one statement."""
        read_at = time.monotonic()  # sent after this: it sees every change committed before
        rows = await self._reader.fetch(_SETS_AND_COUNTS, sorted(set(asked)))
        for counted, version in zip(self._counted, rows[0][-2:], strict=True):
            if counted is not None:
                counted.saw_count(-1 if version is None else int(version), read_at)
        found: defaultdict[str, list[tuple[object, ...]]] = defaultdict(list)
        for row in rows:
            if row[0] is not None:
                found[row[0]].append(tuple(row[1:-2]))
        return [sets_of(terminal_id, found[terminal_id]) for terminal_id in asked]

    async def get(self, alias: str, version: int) -> StoredKey:
        row = await self._pool.fetchrow(
            f"SELECT {_KEY_COLUMNS} FROM session_keys WHERE alias = $1 AND version = $2",
            alias,
            version,
        )
        if row is None:
            raise KeyNotFoundError(f"no key {alias} v{version}")
        return _stored(row)

    async def put(self, stored: StoredKey) -> None:
        status = await self._pool.execute(
            f"INSERT INTO session_keys ({_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT DO NOTHING",
            stored.alias,
            stored.version,
            stored.usage.value,
            stored.kcv,
            stored.created_at,
            stored.block,
        )
        if status != "INSERT 0 1":
            raise KeyExistsError(f"key {stored.alias} v{stored.version} already exists")

    async def list(self, alias: str | None = None) -> list[StoredKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM session_keys"
        if alias is None:
            rows = await self._pool.fetch(sql + " ORDER BY alias, version")
        else:
            rows = await self._pool.fetch(sql + " WHERE alias = $1 ORDER BY version", alias)
        return [_stored(row) for row in rows]

    async def key_sets(self, terminal_id: str) -> KeySets:
        """The terminal's sets as stored now: every message reads them (``SharedSessions``),
        so the reads that come together go as one statement (a read asked for while one runs
        goes in the next, which starts after it: it sees every change committed before it was
        asked for). Measured: a pool acquire, round trip and release per exchange were a tenth
        of the daemon's CPU under ``bench_workers``."""
        return await self._set_reads(terminal_id)

    async def offer(self, terminal_id: str, keys: SignOnKeys, pending_max: int) -> Change:
        change = await self._change(
            terminal_id, lambda sets: offered(sets, keys, pending_max), keys
        )
        assert change is not None
        return change

    async def promote(self, terminal_id: str, mak_version: int) -> Change | None:
        return await self._change(
            terminal_id, lambda sets: promoted(sets, mak_version), promoting=True
        )

    async def end(self, terminal_id: str) -> Change:
        change = await self._change(terminal_id, ended)
        assert change is not None
        return change

    async def _change(
        self,
        terminal_id: str,
        decide: Callable[[KeySets], Change | None],
        added: SignOnKeys | None = None,
        *,
        promoting: bool = False,
    ) -> Change | None:
        """One transaction, serialised per terminal (an advisory lock: a terminal with no
        row yet has nothing to lock): read the sets, ``decide``, write the change."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", SESSION_LOCK, terminal_id
            )
            rows = await connection.fetch(
                f"SELECT {SET_COLUMNS} FROM session_sets WHERE terminal_id = $1", terminal_id
            )
            change = decide(sets_of(terminal_id, rows))
            if change is None:
                return None
            if added is not None:
                batch = await connection.fetchval(
                    "SELECT batch_no FROM terminals WHERE id = $1", terminal_id
                )
                change = change._replace(batch=next_batch(int(batch)))
                await connection.execute(
                    f"INSERT INTO session_sets (terminal_id, {SET_COLUMNS}, batch_no)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    *set_row(terminal_id, PENDING, added),
                    change.batch,
                )
            gone = [keys.mak.version for keys in change.retired]
            if gone:
                await connection.execute(
                    "DELETE FROM session_sets WHERE terminal_id = $1"
                    " AND mak_version = ANY($2::int[])",
                    terminal_id,
                    gone,
                )
            await connection.executemany(
                PRUNE_BLOCKS.format("$1", "$2", "(SELECT unnest($3::int[]))"),
                pruned(terminal_id, change.sets, list),
            )
            current = change.sets.current
            if promoting and current is not None:
                await connection.execute(
                    "UPDATE session_sets SET state = $1 WHERE terminal_id = $2"
                    " AND mak_version = $3",
                    CURRENT,
                    terminal_id,
                    current.mak.version,
                )
                await connection.execute(
                    "UPDATE terminals SET batch_no = (SELECT batch_no FROM session_sets"
                    " WHERE terminal_id = $1 AND mak_version = $2) WHERE id = $1",
                    terminal_id,
                    current.mak.version,
                )
        return change


class RoutedKeyStore:
    """Session keys (``term/...``) in one store (the database's), every other key in another
    (the key ceremonies' file)."""

    def __init__(self, sessions: KeyStore, others: KeyStore) -> None:
        self._sessions = sessions
        self._others = others

    def _for(self, alias: str) -> KeyStore:
        return self._sessions if alias.startswith(SESSION_PREFIX) else self._others

    async def get(self, alias: str, version: int) -> StoredKey:
        return await self._for(alias).get(alias, version)

    async def put(self, stored: StoredKey) -> None:
        await self._for(stored.alias).put(stored)

    async def list(self, alias: str | None = None) -> list[StoredKey]:
        if alias is not None:
            return await self._for(alias).list(alias)
        both = await self._sessions.list() + await self._others.list()
        return sorted(both, key=lambda s: (s.alias, s.version))


class PgCardStatus:
    """The card status register (``switch.bank.cards.CardStatusStore``): loss report, unloss,
    cancel and replacement — the card's status and its blacklist entry under a new list
    version, one transaction, versions serialised — and the ended cards due for the sweep."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def report_lost(self, card_no: str, at_us: int) -> StatusChange:
        return await self._change(card_no, "active", at_us)

    async def unloss(self, card_no: str) -> StatusChange:
        return await self._change(card_no, "lost", 0)

    async def _change(self, card_no: str, expected: str, at_us: int) -> StatusChange:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", BLACKLIST_LOCK)
            row = await connection.fetchrow(
                "SELECT status, application_serial FROM cards WHERE card_no = $1 FOR UPDATE",
                card_no,
            )
            if row is None or row[0] != expected:
                return StatusChange(None if row is None else str(row[0]), 0)
            version = int(await connection.fetchval(_NEXT_VERSION))
            if expected == "active":
                await connection.execute(
                    "INSERT INTO blacklist (application_serial, reason, version, removed_version,"
                    " added_at_us) VALUES ($1, 'lost', $2, NULL, $3)",
                    row[1],
                    version,
                    at_us,
                )
            else:
                await connection.execute(
                    "UPDATE blacklist SET removed_version = $1 WHERE application_serial = $2"
                    " AND reason = 'lost' AND removed_version IS NULL",
                    version,
                    row[1],
                )
            after = "lost" if expected == "active" else "active"
            await connection.execute(
                "UPDATE cards SET status = $1 WHERE card_no = $2", after, card_no
            )
        return StatusChange(expected, version)

    async def cancel(self, card_no: str, at_us: int) -> StatusChange:
        return await self._end(card_no, at_us, None)

    async def replace(self, card_no: str, new_card_no: str, at_us: int) -> StatusChange:
        return await self._end(card_no, at_us, new_card_no)

    async def _end(self, card_no: str, at_us: int, new_card_no: str | None) -> StatusChange:
        """Cancel (no new card) or replace: status, end time, blacklist entry, in one write."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", BLACKLIST_LOCK)
            row = await connection.fetchrow(
                "SELECT status, application_serial, cardholder_id FROM cards"
                " WHERE card_no = $1 FOR UPDATE",
                card_no,
            )
            if row is None or not can_end(row[0]):
                return StatusChange(None if row is None else str(row[0]), 0)
            if new_card_no is not None:
                new = await connection.fetchrow(
                    "SELECT status, cardholder_id FROM cards WHERE card_no = $1", new_card_no
                )
                problem = replacement_problem(
                    card_no, row[2], new_card_no, None if new is None else (new[0], new[1])
                )
                if problem:
                    return StatusChange(str(row[0]), 0, problem)
            status = ending_status(new_card_no)
            version = int(await connection.fetchval(_NEXT_VERSION))
            await connection.execute(
                "INSERT INTO blacklist (application_serial, reason, version, removed_version,"
                " added_at_us) VALUES ($1, $2, $3, NULL, $4)",
                row[1],
                status,
                version,
                at_us,
            )
            await connection.execute(
                "UPDATE cards SET status = $1, cancelled_at_us = $2, replaced_by = $3"
                " WHERE card_no = $4",
                status,
                at_us,
                new_card_no,
                card_no,
            )
        return StatusChange(str(row[0]), version)

    async def ended_before(self, at_us: int) -> list[tuple[str, str, int]]:
        """(application serial, cardholder, ended at µs) of cards cancelled or replaced at or
        before ``at_us``: the ones whose shadows are due to be swept."""
        rows = await self._pool.fetch(ENDED_BEFORE.format("$1"), at_us)
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

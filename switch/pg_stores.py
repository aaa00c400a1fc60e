"""The daemon's asynchronous stores on PostgreSQL (asyncpg, the worker's own pool): the session
key store, the card status register, the reversal queue's delivery state and never-repeating
numbers. The synchronous ones (cards, terminals, the medical store) run the SQLite stores' own
code over ``ledger.pg_bridge``.

Keys: terminals' working keys (aliases ``term/...``) live in the ``session_keys`` table, so a
sign-on answered by one worker is used by every other; keys made by key ceremonies (TMKs, zone
keys) stay in the deployment's file key store (``medswitch keys`` writes it; they change
rarely). Both hold wrapped key blocks under the LMK only, never clear keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg  # type: ignore[import-untyped]

from hsm.errors import KeyExistsError, KeyNotFoundError
from hsm.keyblock import StoredKey
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore
from routing.bank_context import StatusChange
from switch.bank.cards import ENDED_BEFORE, can_end, ending_status, replacement_problem
from switch.bank.saf import PENDING, Pending, pending_of
from switch.sessions import session_prefix

SESSION_PREFIX = session_prefix("")  # "term/": working keys of signed-on terminals
_KEY_COLUMNS = "alias, version, usage, kcv, created_at, block"
BLACKLIST_LOCK = 0x626C6B6C  # advisory lock: one blacklist version at a time
_NEXT_VERSION = (
    "SELECT coalesce(greatest(max(version), max(removed_version)), 0) + 1 FROM blacklist"
)


def _stored(row: asyncpg.Record) -> StoredKey:
    return StoredKey(row[0], int(row[1]), KeyUsage(row[2]), row[3], row[4], row[5])


class PgKeyStore:
    """Wrapped session keys in ``session_keys`` (``hsm.keystore.KeyStore``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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

    async def newest(
        self, wanted: Mapping[str, KeyUsage], terminal_id: str
    ) -> tuple[dict[str, KeyRef], int]:
        """The newest version of each alias with its usage, and the MAK version the terminal
        last signed off (-1: never), in one query."""
        rows = await self._pool.fetch(
            "(SELECT DISTINCT ON (alias) alias, version, usage, kcv FROM session_keys"
            " WHERE alias = ANY($1::text[]) AND usage = ANY($2::text[])"
            " ORDER BY alias, version DESC)"
            " UNION ALL (SELECT NULL, mak_version, NULL, NULL FROM sign_offs"
            " WHERE terminal_id = $3)",
            list(wanted),
            [usage.value for usage in wanted.values()],
            terminal_id,
        )
        off = max((int(row[1]) for row in rows if row[0] is None), default=-1)
        found = {
            row[0]: KeyRef(row[0], int(row[1]), KeyUsage(row[2]), row[3])
            for row in rows
            if row[0] is not None
        }
        return {alias: ref for alias, ref in found.items() if ref.usage is wanted[alias]}, off

    async def sign_off(self, terminal_id: str, mak_version: int) -> None:
        """Record that the terminal signed off the keys up to ``mak_version`` (never lowered)."""
        await self._pool.execute(
            "INSERT INTO sign_offs (terminal_id, mak_version, at_us)"
            " VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)"
            " ON CONFLICT (terminal_id) DO UPDATE SET"
            " mak_version = greatest(sign_offs.mak_version, excluded.mak_version),"
            " at_us = excluded.at_us",
            terminal_id,
            mak_version,
        )


class RoutedKeyStore:
    """Session keys (``term/...``) in one store, every other key in another."""

    def __init__(self, sessions: PgKeyStore, others: KeyStore) -> None:
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

    async def newest(
        self, wanted: Mapping[str, KeyUsage], terminal_id: str
    ) -> tuple[dict[str, KeyRef], int]:
        return await self._sessions.newest(wanted, terminal_id)

    async def sign_off(self, terminal_id: str, mak_version: int) -> None:
        await self._sessions.sign_off(terminal_id, mak_version)


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


class PgReversalQueue:
    """The reversal queue's delivery state (``switch.bank.saf.ReversalQueue``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def pending(self, bank_id: str, limit: int = 100) -> list[Pending]:
        rows = await self._pool.fetch(PENDING.format("$1", "$2"), bank_id, limit)
        return pending_of(list(rows))

    async def mark(self, key: str, *, acknowledged: bool) -> None:
        status = ", status = 'acknowledged'" if acknowledged else ""
        await self._pool.execute(
            f"UPDATE reversal_queue SET attempts = attempts + 1{status} WHERE key = $1", key
        )

"""Cards of the embedded database, read on the event loop's thread — and, in the daemon, kept in
memory for as long as the directory is unchanged.

A primary-key read of SQLite in WAL mode takes microseconds and never waits for the ledger's
writer, so it is cheaper inline than any thread hop (DESIGN §6) — but each read also hands the
GIL to the writer thread and waits to get it back: under bench_settle, reading cards and PSAM
owners from memory instead cut the daemon's CPU per exchange by a quarter. So a directory opened
with ``keep_s`` keeps the records it read, and forgets them all when ``directory_version`` moves:
triggers count every change of cards, PSAMs and the blacklist, whoever makes it (this daemon,
another worker, the CLI, a tool with raw SQL). The count is read again at a card's use once
``keep_s`` (5 ms in the daemon) has passed since it was last read: a change by another process is
seen by every use that comes 5 ms or more after its commit (at any quieter moment, by the very
next use), and a change made through this daemon — a loss report at a bank counter — at once
(:class:`Forgetting`). Without ``keep_s`` (tools, tests) every use reads the database. On
PostgreSQL every read of a message's key sets reads the count too and hands it here
(:meth:`SqlCards.saw_count`, with the time that statement was sent), so a card used within 5 ms
of it reads no count of its own (bench_workers, 2 workers: count reads of either directory 0.14
per exchange instead of 0.22, one per group of messages for the terminal records and a few
here).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date
from pathlib import Path
from typing import Any

from routing.bank_context import StatusChange
from routing.context import CardRecord, OfflineLimits, StoredParameters

KEEP_S = 0.005  # the daemon trusts what it keeps this long before reading the change count
KEPT_MAX = 200_000  # records kept at most (then all are read afresh)
_UNKNOWN = object()

#: The parameters a terminal downloads (``?``: its id): the newest version of the narrowest
#: scope that has one — its group, its institution, every terminal (switch/estate/parameters.py).
PARAMETERS_SQL = (
    "SELECT p.version, p.floor_fen, p.count_max, p.age_max_h, p.categories "
    "FROM terminal_parameters p JOIN terminals t ON t.id = ? "
    "WHERE p.scope = 'all' OR p.scope = 'institution:' || t.institution_id "
    "OR p.scope = 'group:' || t.param_group "
    "ORDER BY CASE WHEN p.scope LIKE 'group:%' THEN 0 WHEN p.scope LIKE 'institution:%' THEN 1 "
    "ELSE 2 END, p.version DESC LIMIT 1"
)


class SqlCards:
    """The card directory over a ``sqlite3``-like connection (SQLite, or PostgreSQL through
    ``ledger.pg_bridge.SyncConnection``): portable statements only."""

    def __init__(self, connection: Any, *, keep_s: float = 0.0) -> None:
        self._connection = connection
        self._keep_s = keep_s
        self._cards: dict[str, CardRecord | None] = {}
        self._owners: dict[str, str | None] = {}
        self._version = -1  # the change count what is kept was read under
        self._checked = 0.0  # when it was last read (time.monotonic)

    def get(self, card_no: str) -> CardRecord | None:
        if not self._current():
            return self._read_card(card_no)
        found = self._cards.get(card_no, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        record = self._read_card(card_no)
        if len(self._cards) >= KEPT_MAX:
            self._cards.clear()
        self._cards[card_no] = record
        return record

    def _read_card(self, card_no: str) -> CardRecord | None:
        row = self._connection.execute(
            "SELECT card_no, application_serial, cardholder_id, key_version, status, expiry "
            "FROM cards WHERE card_no = ?",
            (card_no,),
        ).fetchone()
        if row is None:
            return None
        expiry = row[5] if isinstance(row[5], date) else date.fromisoformat(str(row[5]))
        return CardRecord(row[0], row[1], row[2], int(row[3]), row[4], expiry)

    def psam_institution(self, psam_terminal_no: str) -> str | None:
        """The institution owning the PSAM with this terminal number (bound into TACs)."""
        keeping = self._current()
        found = self._owners.get(psam_terminal_no, _UNKNOWN) if keeping else _UNKNOWN
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        row = self._connection.execute(
            "SELECT institution_id FROM psams WHERE psam_terminal_no = ?", (psam_terminal_no,)
        ).fetchone()
        owner = None if row is None else str(row[0])
        if keeping and len(self._owners) < KEPT_MAX:
            self._owners[psam_terminal_no] = owner
        return owner

    def _current(self) -> bool:
        """Whether what is kept may be used (re-reading the change count when due)."""
        if not self._keep_s:
            return False
        now = time.monotonic()
        if now - self._checked > self._keep_s:
            (version,) = self._connection.execute(
                "SELECT version FROM directory_version WHERE id = 1"
            ).fetchone()
            self.saw_count(version, now)
        return True

    def saw_count(self, version: int, read_at: float) -> None:
        """The change count as read by a statement sent at ``read_at`` (``time.monotonic``):
        here, or with the key sets a message reads (``switch.pg_stores.PgKeyStore``). What is
        kept is forgotten when it differs from the count it was read under (an older read
        arriving after a newer one only forgets once more); it is trusted for ``keep_s`` after
        the latest read sent."""
        if not self._keep_s:
            return
        if version != self._version:
            self.forget()
            self._version = version
        self._checked = max(self._checked, read_at)

    def forget(self) -> None:
        """Read every card and PSAM afresh from now on (a change was made)."""
        self._cards.clear()
        self._owners.clear()

    def blacklist_version(self) -> int:
        row = self._connection.execute(
            "SELECT coalesce(max(v), 0) FROM (SELECT max(version) AS v FROM blacklist"
            " UNION ALL SELECT max(removed_version) FROM blacklist) AS versions"
        ).fetchone()
        return int(row[0] or 0)

    def terminal_parameters(self, terminal_id: str) -> StoredParameters | None:
        """Read at every parameter download (once a sign-on): a new version is seen at once."""
        row = self._connection.execute(PARAMETERS_SQL, (terminal_id,)).fetchone()
        if row is None:
            return None
        limits = OfflineLimits(int(row[1]), int(row[2]), int(row[3]))
        return StoredParameters(int(row[0]), limits, str(row[4]))

    def blacklist_changes(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """(version, 'A' or 'D', application serial) of changes after version ``after``, in
        version order: additions, and removals (unloss) as deletions."""
        rows = self._connection.execute(
            "SELECT version, 'A', application_serial FROM blacklist WHERE version > ? "
            "UNION ALL SELECT removed_version, 'D', application_serial FROM blacklist "
            "WHERE removed_version > ? ORDER BY 1, 2 LIMIT ?",
            (after, after, limit),
        ).fetchall()
        return [(int(v), str(a), str(s)) for v, a, s in rows]

    def close(self) -> None:
        self._connection.close()


class Forgetting:
    """A card status register (``switch.bank.cards.CardStatusStore``) whose changes make the
    card directory forget what it keeps, before the change is answered."""

    def __init__(self, register: Any, cards: SqlCards) -> None:
        self._register = register
        self._cards = cards

    async def report_lost(self, card_no: str, at_us: int) -> StatusChange:
        return self._forgot(await self._register.report_lost(card_no, at_us))

    async def unloss(self, card_no: str) -> StatusChange:
        return self._forgot(await self._register.unloss(card_no))

    async def cancel(self, card_no: str, at_us: int) -> StatusChange:
        return self._forgot(await self._register.cancel(card_no, at_us))

    async def replace(self, card_no: str, new_card_no: str, at_us: int) -> StatusChange:
        return self._forgot(await self._register.replace(card_no, new_card_no, at_us))

    async def ended_before(self, at_us: int) -> list[tuple[str, str, int]]:
        found: list[tuple[str, str, int]] = await self._register.ended_before(at_us)
        return found

    def _forgot(self, change: StatusChange) -> StatusChange:
        self._cards.forget()
        return change


class SqliteCards(SqlCards):
    """Read-only on the embedded database file."""

    def __init__(self, path: Path, *, keep_s: float = 0.0) -> None:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("PRAGMA query_only = ON")
        super().__init__(connection, keep_s=keep_s)

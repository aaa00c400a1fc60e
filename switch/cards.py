"""Cards of the embedded database, read on the event loop's thread.

A primary-key read of SQLite in WAL mode takes microseconds and never waits for the ledger's
writer, so it is cheaper inline than any thread hop (DESIGN §6). Status changes (a loss report)
are seen at once: nothing is cached.
"""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

from routing.context import CardRecord


class SqlCards:
    """The card directory over a ``sqlite3``-like connection (SQLite, or PostgreSQL through
    ``ledger.pg_bridge.SyncConnection``): portable statements only."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def get(self, card_no: str) -> CardRecord | None:
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
        row = self._connection.execute(
            "SELECT institution_id FROM psams WHERE psam_terminal_no = ?", (psam_terminal_no,)
        ).fetchone()
        return None if row is None else str(row[0])

    def blacklist_version(self) -> int:
        row = self._connection.execute(
            "SELECT coalesce(max(v), 0) FROM (SELECT max(version) AS v FROM blacklist"
            " UNION ALL SELECT max(removed_version) FROM blacklist) AS versions"
        ).fetchone()
        return int(row[0] or 0)

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


class SqliteCards(SqlCards):
    """Read-only on the embedded database file."""

    def __init__(self, path: Path) -> None:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("PRAGMA query_only = ON")
        super().__init__(connection)

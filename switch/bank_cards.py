"""The card status register of the embedded database: loss report and unloss.

One short write transaction each (``BEGIN IMMEDIATE``, on a thread: the ledger's writer may hold
the database for a moment): the card's status in ``cards`` and its blacklist entry under a new
list version (``blacklist.version`` for an addition, ``removed_version`` for a removal), so the
incremental blacklist download (60.3 = 370) hands the change to every terminal.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from routing.bank_context import StatusChange

_NEXT_VERSION = (
    "SELECT coalesce(max(max(version), coalesce(max(removed_version), 0)), 0) + 1 FROM blacklist"
)


class SqliteCardStatus:
    def __init__(self, path: Path) -> None:
        self._path = path

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection

    async def report_lost(self, card_no: str, at_us: int) -> StatusChange:
        return await asyncio.to_thread(self._report_lost, card_no, at_us)

    async def unloss(self, card_no: str) -> StatusChange:
        return await asyncio.to_thread(self._unloss, card_no)

    def _report_lost(self, card_no: str, at_us: int) -> StatusChange:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT status, application_serial FROM cards WHERE card_no = ?", (card_no,)
                ).fetchone()
                if row is None or row[0] != "active":
                    connection.execute("ROLLBACK")
                    return StatusChange(None if row is None else str(row[0]), 0)
                (version,) = connection.execute(_NEXT_VERSION).fetchone()
                connection.execute(
                    "INSERT INTO blacklist (application_serial, reason, version, removed_version,"
                    " added_at_us) VALUES (?, 'lost', ?, NULL, ?)",
                    (row[1], version, at_us),
                )
                connection.execute("UPDATE cards SET status = 'lost' WHERE card_no = ?", (card_no,))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        finally:
            connection.close()
        return StatusChange("active", int(version))

    def _unloss(self, card_no: str) -> StatusChange:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(
                    "SELECT status, application_serial FROM cards WHERE card_no = ?", (card_no,)
                ).fetchone()
                if row is None or row[0] != "lost":
                    connection.execute("ROLLBACK")
                    return StatusChange(None if row is None else str(row[0]), 0)
                (version,) = connection.execute(_NEXT_VERSION).fetchone()
                connection.execute(
                    "UPDATE blacklist SET removed_version = ? WHERE application_serial = ? "
                    "AND reason = 'lost' AND removed_version IS NULL",
                    (version, row[1]),
                )
                connection.execute(
                    "UPDATE cards SET status = 'active' WHERE card_no = ?", (card_no,)
                )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        finally:
            connection.close()
        return StatusChange("lost", int(version))

"""The card status register of the embedded database: loss report and unloss, cancel 注销 and
card replacement, and the sweep of ended cards' shadows after the grace period.

One short write transaction each (``BEGIN IMMEDIATE``, on a thread: the ledger's writer may hold
the database for a moment): the card's status in ``cards`` and its blacklist entry under a new
list version (``blacklist.version`` for an addition, ``removed_version`` for a removal), so the
incremental blacklist download (60.3 = 370) hands the change to every terminal.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ledger import events as ev
from ledger.core import Ledger
from ledger.events import GRACE_PERIOD
from routing.bank_context import StatusChange

_NEXT_VERSION = (
    "SELECT coalesce(max(max(version), coalesce(max(removed_version), 0)), 0) + 1 FROM blacklist"
)


class CardStatusStore(Protocol):
    """The card status register as the bank links use it, on either backend (this module's
    :class:`SqliteCardStatus`, ``switch.pg_stores.PgCardStatus``)."""

    async def report_lost(self, card_no: str, at_us: int) -> StatusChange: ...

    async def unloss(self, card_no: str) -> StatusChange: ...

    async def cancel(self, card_no: str, at_us: int) -> StatusChange: ...

    async def replace(self, card_no: str, new_card_no: str, at_us: int) -> StatusChange: ...

    async def ended_before(self, at_us: int) -> list[tuple[str, str, int]]: ...


ENDED_BEFORE = (
    "SELECT application_serial, cardholder_id, cancelled_at_us FROM cards "
    "WHERE status IN ('cancelled', 'replaced') AND cancelled_at_us <= {0} "
    "ORDER BY cancelled_at_us"
)


def ending_status(new_card_no: str | None) -> str:
    return "cancelled" if new_card_no is None else "replaced"


def can_end(status: str) -> bool:
    """A card is cancelled or replaced from active or lost, never twice."""
    return status in ("active", "lost")


def replacement_problem(
    card_no: str, cardholder: Any, new_card_no: str, new: tuple[Any, Any] | None
) -> str:
    """Why ``new_card_no`` (its (status, cardholder) row, None if unknown) cannot replace
    ``card_no`` of ``cardholder``: '' when it can."""
    if new is None or new_card_no == card_no:
        return "unknown"
    if new[1] != cardholder:
        return "other_holder"
    if new[0] != "active":
        return "not_active"
    return ""


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
        return self._write(lambda connection: _report_lost_in(connection, card_no, at_us))

    def _unloss(self, card_no: str) -> StatusChange:
        return self._write(lambda connection: _unloss_in(connection, card_no))

    async def cancel(self, card_no: str, at_us: int) -> StatusChange:
        return await asyncio.to_thread(self._end, card_no, at_us, None)

    async def replace(self, card_no: str, new_card_no: str, at_us: int) -> StatusChange:
        return await asyncio.to_thread(self._end, card_no, at_us, new_card_no)

    def _end(self, card_no: str, at_us: int, new_card_no: str | None) -> StatusChange:
        """Cancel (no new card) or replace: status, end time, blacklist entry, in one write."""
        return self._write(lambda connection: self._end_in(connection, card_no, at_us, new_card_no))

    def _write(self, change_in: Callable[[sqlite3.Connection], StatusChange]) -> StatusChange:
        """``change_in`` in one write transaction: committed when it changed the blacklist
        (a new list version), rolled back when it refused."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                change = change_in(connection)
                connection.execute("COMMIT" if change.blacklist_version else "ROLLBACK")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        finally:
            connection.close()
        return change

    def _end_in(
        self, connection: sqlite3.Connection, card_no: str, at_us: int, new_card_no: str | None
    ) -> StatusChange:
        row = connection.execute(
            "SELECT status, application_serial, cardholder_id FROM cards WHERE card_no = ?",
            (card_no,),
        ).fetchone()
        if row is None or not can_end(row[0]):
            return StatusChange(None if row is None else str(row[0]), 0)
        if new_card_no is not None:
            new = connection.execute(
                "SELECT status, cardholder_id FROM cards WHERE card_no = ?", (new_card_no,)
            ).fetchone()
            problem = replacement_problem(card_no, row[2], new_card_no, new)
            if problem:
                return StatusChange(str(row[0]), 0, problem)
        status = ending_status(new_card_no)
        (version,) = connection.execute(_NEXT_VERSION).fetchone()
        connection.execute(
            "INSERT INTO blacklist (application_serial, reason, version, removed_version,"
            " added_at_us) VALUES (?, ?, ?, NULL, ?)",
            (row[1], status, version, at_us),
        )
        connection.execute(
            "UPDATE cards SET status = ?, cancelled_at_us = ?, replaced_by = ? WHERE card_no = ?",
            (status, at_us, new_card_no, card_no),
        )
        return StatusChange(str(row[0]), int(version))

    async def ended_before(self, at_us: int) -> list[tuple[str, str, int]]:
        """(application serial, cardholder, ended at µs) of cards cancelled or replaced at or
        before ``at_us``: the ones whose shadows are due to be swept."""
        return await asyncio.to_thread(self._ended_before, at_us)

    def _ended_before(self, at_us: int) -> list[tuple[str, str, int]]:
        connection = self._connect()
        try:
            rows = connection.execute(ENDED_BEFORE.format("?"), (at_us,)).fetchall()
        finally:
            connection.close()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def _report_lost_in(connection: sqlite3.Connection, card_no: str, at_us: int) -> StatusChange:
    """An active card becomes lost, added to the blacklist under a new version."""
    row = connection.execute(
        "SELECT status, application_serial FROM cards WHERE card_no = ?", (card_no,)
    ).fetchone()
    if row is None or row[0] != "active":
        return StatusChange(None if row is None else str(row[0]), 0)
    (version,) = connection.execute(_NEXT_VERSION).fetchone()
    connection.execute(
        "INSERT INTO blacklist (application_serial, reason, version, removed_version,"
        " added_at_us) VALUES (?, 'lost', ?, NULL, ?)",
        (row[1], version, at_us),
    )
    connection.execute("UPDATE cards SET status = 'lost' WHERE card_no = ?", (card_no,))
    return StatusChange("active", int(version))


def _unloss_in(connection: sqlite3.Connection, card_no: str) -> StatusChange:
    """A lost card becomes active again, its blacklist entry removed under a new version."""
    row = connection.execute(
        "SELECT status, application_serial FROM cards WHERE card_no = ?", (card_no,)
    ).fetchone()
    if row is None or row[0] != "lost":
        return StatusChange(None if row is None else str(row[0]), 0)
    (version,) = connection.execute(_NEXT_VERSION).fetchone()
    connection.execute(
        "UPDATE blacklist SET removed_version = ? WHERE application_serial = ? "
        "AND reason = 'lost' AND removed_version IS NULL",
        (version, row[1]),
    )
    connection.execute("UPDATE cards SET status = 'active' WHERE card_no = ?", (card_no,))
    return StatusChange("lost", int(version))


async def sweep_ended_cards(
    cards: CardStatusStore, ledger: Ledger, now: datetime, grace: timedelta = GRACE_PERIOD
) -> list[tuple[str, str]]:
    """Post the sweep of every cancelled or replaced card past its grace period (once each:
    a card swept before posts nothing): ED shadow → personal fund, EP shadow → refunds
    payable. Returns (application serial, outcome) of those that moved money or went to review.
    """
    due_us = int((now - grace).timestamp() * 1_000_000)
    done: list[tuple[str, str]] = []
    for serial, cardholder, ended_us in await cards.ended_before(due_us):
        ended = datetime.fromtimestamp(ended_us / 1_000_000, UTC)
        result = await ev.post_card_sweep(
            ledger, ev.CardSweep(serial, cardholder, ended, grace), now
        )
        if result.outcome not in (ev.Outcome.NOTHING_TO_POST, ev.Outcome.ALREADY_POSTED):
            done.append((serial, result.outcome.name))
    return done

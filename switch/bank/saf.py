"""Store-and-forward of reversals to a bank: written to the database first (the ledger's
``reversal_queue``, by :func:`ledger.events.resolve_attempt` when an EP load is proven not to
have happened), then sent over the outbound link until the bank acknowledges — 0420 the first
time, 0421 (repeat) after that — across link outages and restarts. Delivered at least once; the
bank applies a reversal once (its message key names the original).

The original's data elements (F90) come from the attempt's message key: an EP load forwarded
from a bank counter keeps the counter's F32, F7 and F11 (``bank|F32|F7|F11|class``). A queued
reversal whose original cannot be named (not forwarded that way) stays queued and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ledger.core import QueuedReversal
from ledger.events import Attempt
from messages.bank import BankReversal
from switch.bank.link import BankLinkClient, BankLinkPool, LinkDown

log = logging.getLogger("medswitch.bank.saf")

SAVINGS_DEBIT = "401000"
ACKNOWLEDGED = ("00", "25")  # done, or the bank never had the original: nothing to reverse


@dataclass(frozen=True, slots=True)
class Pending:
    item: QueuedReversal
    attempts: int


class ReversalQueue(Protocol):
    """The queue's delivery state on either backend (:class:`SqliteReversalQueue`,
    ``switch.pg_stores.PgReversalQueue``): the queued ones of a bank in order, and marking a
    send (acknowledged or not; each counts as an attempt)."""

    async def pending(self, bank_id: str, limit: int = 100) -> list[Pending]: ...

    async def mark(self, key: str, *, acknowledged: bool) -> None: ...


PENDING = (
    "SELECT key, bank_id, reference, amount_fen, attempts FROM reversal_queue "
    "WHERE bank_id = {0} AND status = 'queued' ORDER BY seq LIMIT {1}"
)


def pending_of(rows: list[Any]) -> list[Pending]:
    return [Pending(QueuedReversal(r[0], r[1], r[2], int(r[3])), int(r[4])) for r in rows]


class SqliteReversalQueue:
    """The queue's delivery state (status, attempts) in the embedded database."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=10.0)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection

    def _pending(self, bank_id: str, limit: int) -> list[Pending]:
        with contextlib.closing(self._connect()) as connection:
            rows = connection.execute(PENDING.format("?", "?"), (bank_id, limit)).fetchall()
        return pending_of(rows)

    def _mark(self, key: str, acknowledged: bool) -> None:
        with contextlib.closing(self._connect()) as connection, connection:
            if acknowledged:
                connection.execute(
                    "UPDATE reversal_queue SET status = 'acknowledged', attempts = attempts + 1 "
                    "WHERE key = ?",
                    (key,),
                )
            else:
                connection.execute(
                    "UPDATE reversal_queue SET attempts = attempts + 1 WHERE key = ?", (key,)
                )

    async def pending(self, bank_id: str, limit: int = 100) -> list[Pending]:
        return await asyncio.to_thread(self._pending, bank_id, limit)

    async def mark(self, key: str, *, acknowledged: bool) -> None:
        await asyncio.to_thread(self._mark, key, acknowledged)


def original_data(item: QueuedReversal) -> str | None:
    """F90 — MTI(4) STAN(6) F7(10) F32(11) F33(11) — of the original, if its key names it."""
    try:
        message_key = Attempt.parse(item.reference, item.amount_fen).message_key
    except ValueError:
        return None
    parts = message_key.split("|")
    if len(parts) != 5 or parts[0] != "bank" or not all(p.isdigit() for p in parts[1:]):
        return None
    _, acquirer, transmitted, stan, mti = parts
    return f"{mti}{stan}{transmitted}{int(acquirer):011d}{0:011d}"


class SafSender:
    """Drains one bank's queue whenever its link is up; one reversal at a time, in order."""

    def __init__(
        self,
        queue: ReversalQueue,
        link: BankLinkClient | BankLinkPool,
        bank_id: str,
        interval_s: float = 1.0,
    ) -> None:
        self.queue = queue
        self.link = link
        self.bank_id = bank_id
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def drain(self) -> int:
        """Send what is queued; stops at the first failure. Returns how many were acknowledged."""
        delivered = 0
        for pending in await self.queue.pending(self.bank_id):
            original = original_data(pending.item)
            if original is None:
                log.warning("reversal %s names no original; left queued", pending.item.key)
                continue
            reversal = BankReversal(
                **await self.link.next_envelope(),
                processing_code=SAVINGS_DEBIT,
                original=original,
                amount_fen=pending.item.amount_fen,
                repeat=pending.attempts > 0,
            )
            try:
                reply = await self.link.request(reversal)
            except (LinkDown, TimeoutError):
                await self.queue.mark(pending.item.key, acknowledged=False)
                return delivered
            done = reply.response_code in ACKNOWLEDGED
            await self.queue.mark(pending.item.key, acknowledged=done)
            if not done:
                log.warning("reversal %s answered %s", pending.item.key, reply.response_code)
                return delivered
            delivered += 1
        return delivered

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:  # until close() cancels it; each round bounded by the queue's page
            if self.link.up:
                await self.drain()
            await asyncio.sleep(self.interval_s)

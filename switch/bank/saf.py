"""Store-and-forward of reversals to a bank: written to the database first (the ledger's
``reversal_queue``, by :func:`ledger.events.resolve_attempt` when an EP load is proven not to
have happened), then sent over the outbound link until the bank acknowledges (0430 or 0431 with
00, or 25: it never had the original) — across link outages and restarts. Delivered at least
once; the bank applies a reversal once (its message key names the original).

The rules (specs/bank-interface.md, "Store-and-forward"):

- The first sending is 0420 with a new F11 and F7, kept in the queue before it goes; every
  later one is a repeat, 0421, with the same F11 and F7.
- An attempt not acknowledged (answered otherwise, timed out, or its connection lost) makes the
  item due again after ``saf_backoff_initial_s`` × 2^(attempts − 1), at most
  ``saf_backoff_max_s``, less a random jitter of up to 10 %; the due time is kept in the queue
  (a restart keeps the backoff). A
  request never sent (the link is down) is not an attempt.
- After ``saf_attempts_max`` attempts, or ``saf_age_max_s`` after it was queued, the item is
  given up: status ``review`` and a review item (reason ``reversal_undelivered``) in one
  transaction, a metric and a log line. So is an item whose original cannot be named (F90).
- Items go independently, up to ``saf_in_flight_max`` at a time: one stuck item does not delay
  the next. With ``saf_ordered`` the bank requires order: only the oldest item goes, and the
  next one after it is acknowledged or given up.

The original's data elements (F90) come from the attempt's message key: an EP load forwarded
from a bank counter keeps the counter's F32, F7 and F11 (``bank|F32|F7|F11|class``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.core import QueuedReversal, ReviewItem, transfer_id
from ledger.events import Attempt
from messages.bank import BankReversal
from switch.bank.link import BankLinkClient, BankLinkPool, LinkDown, LinkLost
from switch.bank.link_types import jittered
from switch.bank.observe import SafEvents
from switch.bank.saf_store import (
    Depth,
    Pending,
    PgReversalQueue,
    ReversalQueue,
    SqliteReversalQueue,
)
from switch.config import BankConfig

__all__ = [
    "Depth",
    "Pending",
    "PgReversalQueue",
    "ReversalQueue",
    "SafSender",
    "SafSettings",
    "SqliteReversalQueue",
    "original_data",
]

SAVINGS_DEBIT = "401000"
ACKNOWLEDGED = ("00", "25")  # done, or the bank never had the original: nothing to reverse
REVIEW_REASON = "reversal_undelivered"
PAGE = 100  # queued items looked at per round, oldest first
REFERENCE_CHARS_MAX = 240


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class SafSettings:
    """How a bank's reversals are retried and given up (`[bank]` saf_* settings)."""

    backoff_initial_s: float = 5.0
    backoff_max_s: float = 300.0
    attempts_max: int = 50
    age_max_s: float = 86_400.0
    in_flight_max: int = 8
    ordered: bool = False
    poll_s: float = 1.0  # how often the queue is looked at

    @classmethod
    def of(cls, config: BankConfig) -> SafSettings:
        return cls(
            backoff_initial_s=config.saf_backoff_initial_s,
            backoff_max_s=config.saf_backoff_max_s,
            attempts_max=config.saf_attempts_max,
            age_max_s=config.saf_age_max_s,
            in_flight_max=config.saf_in_flight_max,
            ordered=config.saf_ordered,
            poll_s=min(1.0, config.saf_backoff_initial_s),
        )

    def delay_s(self, attempts: int) -> float:
        """The wait after the ``attempts``-th unacknowledged attempt.

        >>> [SafSettings(backoff_initial_s=5, backoff_max_s=60).delay_s(n) for n in (1, 2, 4, 9)]
        [5.0, 10.0, 40.0, 60.0]
        """
        return float(min(self.backoff_initial_s * 2 ** max(0, attempts - 1), self.backoff_max_s))


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
    """Drains one bank's queue whenever its link is up, each item on its own schedule."""

    def __init__(
        self,
        queue: ReversalQueue,
        link: BankLinkClient | BankLinkPool,
        bank_id: str,
        settings: SafSettings | None = None,
        events: SafEvents | None = None,
        clock_us: Callable[[], int] = now_us,
        draw: Callable[[], float] | None = None,
    ) -> None:
        self.queue = queue
        self.link = link
        self.bank_id = bank_id
        self.settings = settings or SafSettings()
        self.events = events or SafEvents(bank_id)
        self.clock_us = clock_us
        self._in_flight: dict[str, asyncio.Task[bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._acknowledged = asyncio.Event()  # a send was acknowledged: look again at once
        # Sends finished, each with the count of sends finished by then: a row read before its
        # send finished is stale (it would be sent again, as if never sent).
        self._finishes = 0
        self._finished_as: dict[str, int] = {}
        self._draw = draw or random.Random().random  # the backoff's jitter (not a secret)

    async def depth(self) -> Depth:
        return await self.queue.depth(self.bank_id)

    async def drain(self) -> int:
        """One round, waiting for the sends it started: how many were acknowledged."""
        started = await self.round()
        done = await asyncio.gather(*started)
        return sum(done)

    async def round(self) -> list[asyncio.Task[bool]]:
        """Give up the items past their limits; start sending those due (not already going)."""
        settings = self.settings
        started: list[asyncio.Task[bool]] = []
        reading = self._finishes
        self._finished_as = {k: n for k, n in self._finished_as.items() if n > reading}
        for pending in await self.queue.pending(self.bank_id, PAGE):
            if self._finished_as.get(pending.key, 0) > reading:  # read before it finished
                if settings.ordered:
                    break  # the next round (at once, when it was acknowledged) reads it again
                continue
            if pending.key in self._in_flight:
                if settings.ordered:
                    break
                continue
            why = self._past_limit(pending)
            if why is not None:
                await self._give_up(pending, why)
                continue
            if pending.next_at_us > self.clock_us() or not self.link.up:
                if settings.ordered:
                    break
                continue
            if len(self._in_flight) >= settings.in_flight_max:
                break
            task = asyncio.ensure_future(self._send(pending))
            self._in_flight[pending.key] = task
            task.add_done_callback(functools.partial(self._finished, pending.key))
            started.append(task)
            if settings.ordered:
                break
        return started

    def _finished(self, key: str, task: asyncio.Task[bool]) -> None:
        self._in_flight.pop(key, None)
        self._finishes += 1
        self._finished_as[key] = self._finishes
        if task.cancelled():
            return
        if task.exception() is not None:  # the next round retries
            self.events.failed_send(key, task.exception())
        elif task.result():
            self._acknowledged.set()

    def _past_limit(self, pending: Pending) -> str | None:
        settings = self.settings
        age_s = (self.clock_us() - pending.created_at_us) / 1e6
        if original_data(pending.item) is None:
            return "its original cannot be named (F90)"
        if pending.attempts >= settings.attempts_max:
            return f"not acknowledged after {pending.attempts} attempts"
        if age_s >= settings.age_max_s:
            return (
                f"not acknowledged {age_s:.0f} s after it was queued ({pending.attempts} attempts)"
            )
        return None

    async def _give_up(self, pending: Pending, why: str) -> None:
        item = pending.item
        envelope = f"F11 {pending.stan} F7 {pending.transmitted}" if pending.stan else "never sent"
        review = ReviewItem(
            transfer_id("review", REVIEW_REASON, item.key),
            REVIEW_REASON,
            item.reference[:REFERENCE_CHARS_MAX],
            item.amount_fen,
            f"reversal {item.key} to bank {item.bank_id} {why}; {envelope}",
        )
        if await self.queue.give_up(item.key, review, self.clock_us()):
            self.events.review(item.key, why)

    async def _send(self, pending: Pending) -> bool:
        """One attempt; True when acknowledged."""
        original = original_data(pending.item)
        assert original is not None  # items without one are given up before
        envelope = await self._envelope(pending)
        reversal = BankReversal(
            **envelope,
            processing_code=SAVINGS_DEBIT,
            original=original,
            amount_fen=pending.item.amount_fen,
            repeat=pending.stan is not None,
        )
        stan = envelope["stan"]
        try:
            reply = await self.link.request(reversal)
        except (LinkLost, TimeoutError) as err:
            code = "lost" if isinstance(err, LinkLost) else "timed out"
        except LinkDown:
            return False  # never sent: not an attempt; due again when the link is up
        else:
            code = reply.response_code
        attempts = pending.attempts + 1
        done = code in ACKNOWLEDGED
        delay_s = 0.0 if done else jittered(self.settings.delay_s(attempts), self._draw())
        next_at_us = self.clock_us() + int(delay_s * 1e6)
        await self.queue.attempted(pending.key, acknowledged=done, next_at_us=next_at_us)
        if done:
            self.events.acknowledged(pending.key, stan, code, attempts)
        else:
            self.events.retried(pending.key, stan, code, attempts, delay_s)
        return done

    async def _envelope(self, pending: Pending) -> dict[str, Any]:
        """F11, F7, F32: a repeat's are its first sending's (kept in the queue before it goes),
        unless the dialect says ``repeat = "new"``."""
        acquirer_id = self.link.settings.acquirer_id
        keep = self.link.settings.dialect.repeat != "new"  # the bank's dialect says
        if keep and pending.stan is not None and pending.transmitted is not None:
            return {
                "stan": pending.stan,
                "transmitted": pending.transmitted,
                "acquirer_id": acquirer_id,
            }
        envelope = await self.link.next_envelope()
        await self.queue.sending(
            pending.key, envelope["stan"], envelope["transmitted"], self.clock_us()
        )
        return envelope

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        tasks = [*([self._task] if self._task is not None else []), *self._in_flight.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:  # until close() cancels it; each round bounded by the queue's page
            self._acknowledged.clear()
            try:
                await self.round()
            except Exception:  # a database hiccup: logged, the next round tries again
                self.events.failed_round()
            # The next round after poll_s, or as soon as a send is acknowledged (the next in
            # order, or a free place among those in flight).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acknowledged.wait(), self.settings.poll_s)

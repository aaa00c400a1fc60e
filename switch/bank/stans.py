"""Outbound STANs (F11 towards a bank) from the daemon's shared ``stan`` sequence."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from switch.sequences import Sequences

STAN_RESERVE = 32  # outbound STANs drawn ahead from the shared sequence, per bank


class NoStanAhead(ConnectionError):
    """A request built synchronously found no STAN drawn ahead (a burst beyond the reserve):
    it is not sent."""


class Stans:
    """Outbound STANs (F11) from the shared sequence ``stan`` (``switch.sequences``): unique
    across the workers and restarts (on PostgreSQL a database sequence, on SQLite blocks from
    the ``counters`` table), never restarting at 1 with the process.

    Asynchronous callers await :meth:`draw`; the synchronous :meth:`__next__` (an envelope built
    inside a handler) takes from numbers drawn ahead, topped up in the background when half
    used. Without sequences (a test, a simulator): counting from 1 in the process."""

    def __init__(self, sequences: Sequences | None = None, reserve: int = STAN_RESERVE) -> None:
        self._sequences = sequences
        self._reserve = reserve
        self._ahead: list[int] = []
        self._count = itertools.count(1)
        self._filling: asyncio.Task[None] | None = None

    async def draw(self) -> int:
        if self._sequences is None:
            return next(self._count)
        if self._ahead:
            return self._ahead.pop(0)
        return await self._sequences.next("stan")

    def __iter__(self) -> Stans:
        return self

    def __next__(self) -> int:
        if self._sequences is None:
            return next(self._count)
        if len(self._ahead) <= self._reserve // 2:
            self._top_up()
        if not self._ahead:
            raise NoStanAhead("no outbound STAN drawn ahead yet")
        return self._ahead.pop(0)

    async def fill(self) -> None:
        """Draw ahead up to the reserve (before the link is used, and in the background)."""
        if self._sequences is None:
            return
        sequences = self._sequences
        missing = self._reserve - len(self._ahead)
        if missing > 0:  # concurrently: one round trip's wait on PostgreSQL, not one each
            drawn = await asyncio.gather(*(sequences.next("stan") for _ in range(missing)))
            self._ahead.extend(drawn)

    def _top_up(self) -> None:
        if self._filling is None or self._filling.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule
                self._filling = asyncio.ensure_future(self.fill())

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._filling

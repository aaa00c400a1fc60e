"""The healing connection's schedule while PostgreSQL is away (refusing connections, as during
a restart): one connect attempt per backoff period, the period doubling to its longest, a new
connection once the server answers — and nothing attempted in between."""

from __future__ import annotations

import asyncio

from ledger.pg_connection import Backoff, Healing


class FakeConnection:
    """What Healing uses of an asyncpg connection."""

    def __init__(self) -> None:
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True


class Server:
    """Refuses ``refusals`` connects, then accepts; counts the attempts."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.attempts = refusals, 0

    async def connect(self) -> FakeConnection:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise ConnectionRefusedError("the database system is starting up")
        return FakeConnection()


def test_a_lost_connection_is_made_again_on_the_backoff_schedule() -> None:
    async def main() -> None:
        now = [0.0]
        server = Server(refusals=3)
        first = FakeConnection()
        link = Healing(
            first, server.connect, backoff=Backoff(first_s=1.0, longest_s=2.0), clock=lambda: now[0]
        )
        assert await link.ready() and server.attempts == 0  # up: nothing to do
        link.drop()
        assert first.closed and not link.up
        schedule = []
        for tick in range(12):  # 0.0, 0.5, ... 5.5 s
            now[0] = tick * 0.5
            ready = await link.ready()
            schedule.append((now[0], server.attempts, ready))
            if ready:
                break
        # refused at 0 s (next at 1 s), at 1 s (next at 3 s), at 3 s (next at 5 s); up at 5 s
        attempts_at = {t: a for t, a, _ in schedule}
        assert attempts_at[0.0] == 1 and attempts_at[0.5] == 1
        assert attempts_at[1.0] == 2 and attempts_at[2.5] == 2
        assert attempts_at[3.0] == 3 and attempts_at[4.5] == 3
        assert schedule[-1] == (5.0, 4, True)
        assert link.up and link.connection is not first and link.reconnects == 1
        assert link.last_error is None

    asyncio.run(main())

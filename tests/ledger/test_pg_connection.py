"""The healing connection's schedule while PostgreSQL is away (refusing connections, as during
a restart): one connect attempt per backoff period, the period doubling to its longest, a new
connection once the server answers — and nothing attempted in between."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.pg_connection import (
    KEEPALIVE_IDLE_S,
    KEEPALIVE_INTERVAL_S,
    KEEPALIVE_PROBES,
    USER_TIMEOUT_S,
    Backoff,
    Healing,
    KeptAlive,
    keep_alive,
)
from tests.support.pg import DSN


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


def test_a_tcp_connection_is_kept_alive_with_a_user_timeout() -> None:
    """A silent drop is noticed in seconds: keepalive probes after 5 s of silence, and data
    unacknowledged for 15 s ends the connection (keepalive does not probe while a request
    waits for its acknowledgement)."""
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as client:
        keep_alive(client)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        tcp = socket.IPPROTO_TCP
        assert client.getsockopt(tcp, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
        assert client.getsockopt(tcp, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL_S
        assert client.getsockopt(tcp, socket.TCP_KEEPCNT) == KEEPALIVE_PROBES
        assert client.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_S * 1000
    one, other = socket.socketpair()  # not TCP: left alone
    with one, other:
        keep_alive(one)
        assert one.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.postgres
def test_the_ledgers_connections_are_kept_alive() -> None:
    """The writer's connection (``KeptAlive``): its socket's keepalive timer runs (``ss``)."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")

    async def main() -> str:
        connection = await asyncpg.connect(DSN, connection_class=KeptAlive)
        try:
            port = await connection.fetchval("SELECT inet_client_port()")
            found = subprocess.run(
                ["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            return found.stdout
        finally:
            await connection.close()

    assert "timer:(keepalive" in asyncio.run(main())

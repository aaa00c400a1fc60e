"""A PostgreSQL connection that heals: lost (the server restarted, the backend was terminated,
the network dropped) it is connected again, at most once per backoff period.

The ledger's group-committing writers each hold one connection of their own (not a pool: a
batch is one transaction on it). :class:`Healing` keeps it: :meth:`Healing.ready` says whether
there is a live connection now, trying to make one when the last attempt is far enough back
(the wait doubles from ``first_s`` to ``longest_s`` while attempts fail, and starts again after
one succeeds), so a batch that arrives while PostgreSQL is away fails at once rather than
waiting on a connect per caller. :func:`lost` tells a lost connection from an error of the
statement (a deadlock, a constraint): only the first is healed.

What was in flight when the connection was lost has an unknown outcome (a COMMIT may have
reached the server before the socket closed): the caller answers it as unavailable (96), never
as done; every ledger write is safe to retry by its idempotency key.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

CONNECT_TIMEOUT_S = 5.0
#: A silent drop (a peer gone without a reset: a cable, a failed-over address, a firewall's
#: state lost) noticed in seconds, not when TCP gives up (~15 min of retransmissions): probes
#: after KEEPALIVE_IDLE_S of silence, every KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES unanswered
#: end it; data sent and not acknowledged for USER_TIMEOUT_S ends it too (keepalive does not
#: probe while a request is unacknowledged).
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_PROBES = 3
USER_TIMEOUT_S = 15
#: Errors that mean the connection, not the statement, failed (with ``is_closed()``, which an
#: ``InterfaceError`` on a closed connection also shows).
_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,  # 08xxx, and asyncpg's ConnectionDoesNotExistError
    asyncpg.AdminShutdownError,  # pg_terminate_backend, a fast shutdown
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
)


def lost(error: BaseException, connection: asyncpg.Connection) -> bool:
    """Whether ``error`` on ``connection`` means the connection is gone."""
    return bool(connection.is_closed()) or isinstance(error, _LOST)


def keep_alive(sock: Any) -> None:
    """TCP keepalive and a user timeout on a connection's socket (a TCP one, on Linux)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_S * 1000)


class KeptAlive(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose socket notices a silent drop (:func:`keep_alive`): pass
    ``connection_class=KeptAlive`` to ``asyncpg.connect`` or ``create_pool``."""

    def __init__(self, protocol: Any, transport: Any, *args: Any) -> None:
        super().__init__(protocol, transport, *args)
        keep_alive(transport.get_extra_info("socket"))


async def keep_session(connection: asyncpg.Connection) -> None:
    """A pool's ``reset``: nothing beyond asyncpg's own (an open transaction rolled back, its
    listeners dropped), not its default query (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``) — a round trip on every release, a fifth of the daemon's CPU on
    PostgreSQL. None is needed: the daemon's connections hold no session state past a
    transaction (advisory locks are ``pg_advisory_xact_lock``, settings ``set_config(...,
    true)`` or the connection's own ``server_settings``, no LISTEN, no cursor ``WITH HOLD``)."""


#: The array types the daemon's statements bind or return. asyncpg knows scalar types but
#: derives each array's codec from the server's catalogue, once per connection, at the first
#: statement that uses it (``WITH RECURSIVE typeinfo_tree``: some milliseconds of a cold
#: backend's CPU each); :func:`warm` asks for them all in one statement when a pool connects.
ARRAY_TYPES = ("text", "varchar", "smallint", "int", "bigint", "bytea")
_WARM = "SELECT " + ", ".join(f"NULL::{name}[]" for name in ARRAY_TYPES)


async def warm(connection: asyncpg.Connection) -> None:
    """A pool's ``init``: the array codecs learnt now, in one introspection, not by the first
    requests served on the connection (measured under ``bench_workers``: a tenth of the
    database's busy backends were these introspections on connections the pools opened under
    load). Only for a pool whose statements bind arrays (the daemon's event loop pool): on a
    cold backend the introspection costs milliseconds, for nothing where none is used (the
    bridge's card and terminal reads)."""
    await connection.fetchval(_WARM)


class Backoff:
    """The wait before the next connect attempt: ``first_s``, doubled per failure up to
    ``longest_s``; none after a success.

    >>> backoff = Backoff(first_s=0.5, longest_s=1.5)
    >>> [backoff.failed() for _ in range(4)]
    [0.5, 1.0, 1.5, 1.5]
    >>> backoff.succeeded(); backoff.failed()
    0.5
    """

    def __init__(self, *, first_s: float = 0.05, longest_s: float = 2.0) -> None:
        assert 0 < first_s <= longest_s
        self.first_s, self.longest_s = first_s, longest_s
        self._next_s = first_s

    def failed(self) -> float:
        wait_s = self._next_s
        self._next_s = min(self._next_s * 2, self.longest_s)
        return wait_s

    def succeeded(self) -> None:
        self._next_s = self.first_s


def connector(dsn: str, settings: dict[str, str]) -> Callable[[], Awaitable[asyncpg.Connection]]:
    """What makes (and, for :class:`Healing`, makes again) one connection of ours to ``dsn``:
    its session ``settings``, the connect timeout, a socket that notices a silent drop."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            dsn, server_settings=settings, timeout=CONNECT_TIMEOUT_S, connection_class=KeptAlive
        )

    return connect


class Healing:
    """One connection, made again by ``connect`` when it is lost (see the module)."""

    def __init__(
        self,
        connection: asyncpg.Connection,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self._connect = connect
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._retry_at = 0.0
        self.reconnects = 0  # connections made again (for tests and logs)
        self.last_error: BaseException | None = None

    @property
    def up(self) -> bool:
        return not self.connection.is_closed()

    @property
    def retry_in_s(self) -> float:
        """How long until the next connect attempt is due (0: now)."""
        return max(0.0, self._retry_at - self._clock())

    def drop(self) -> None:
        """Forget a connection found lost (closed at once, without a goodbye to the server)."""
        if not self.connection.is_closed():
            self.connection.terminate()

    async def ready(self) -> bool:
        """Whether there is a live connection, after one connect attempt if it is down and
        the backoff has passed (the attempt bounded by its connect timeout)."""
        if self.up:
            return True
        if self._clock() < self._retry_at:
            return False
        try:
            self.connection = await self._connect()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            self.last_error = error
            self._retry_at = self._clock() + self._backoff.failed()
            return False
        self._backoff.succeeded()
        self.reconnects += 1
        self.last_error = None
        return True

    async def close(self) -> None:
        if not self.connection.is_closed():
            await self.connection.close(timeout=CONNECT_TIMEOUT_S)

"""The HTTP port's limits: connections, and time for each part of a request.

aiohttp alone keeps a connection that never finishes its request head for an hour (its
keep-alive timeout) and accepts as many connections as there are file descriptors, so 1,100
partial requests took every descriptor the terminals needed. :class:`HttpGuard` sits between
the transport and aiohttp's protocol (:class:`GuardedSite`) and bounds, per connection:

- **before a request**: a connection with no request in progress closes after
  ``idle_timeout_s`` (from its opening or its last response);
- **the head**: from its first byte, a request's head must be complete within
  ``header_timeout_s`` (the guard's middleware runs once aiohttp has parsed it);
- **the body**: within ``body_timeout_s`` of the head (checked when the deadline comes: the
  body's stream at its end, or the connection is aborted);
- **connections**: ``connections_max`` in all and ``connections_per_address_max`` from one
  address; over either, the connection is aborted before aiohttp sees it.

The handler's own time is not bounded here (its collaborators have their timeouts). A request
whose Content-Length exceeds ``body_bytes_max`` is answered 413 before its handler (and before
any credential check) runs; a chunked body is held to the same limit by aiohttp as it is read
(the root application's ``client_max_size``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import streams, web

log = logging.getLogger("medswitch.http")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    connections_max: int = 256
    connections_per_address_max: int = 64
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    body_bytes_max: int = 256 * 1024


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, a deadline for the phase it is in."""

    def __init__(self, guard: HttpGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._idle = True  # no request in progress and no byte of one yet
        self._body: streams.StreamReader | None = None  # a request's body still arriving
        self.address = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0])
        if not self._guard.admit(self):
            self.transport.abort()
            return
        self._inner = self._factory()
        self._inner.connection_made(transport)
        self._deadline(self._guard.limits.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._guard.forget(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._idle:  # a request's first bytes: its head has header_timeout_s from now
            self._idle = False
            self._deadline(self._guard.limits.header_timeout_s)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def head_received(self, body: streams.StreamReader) -> None:
        """The guard's middleware: the head is in; the body has ``body_timeout_s``."""
        self._idle = False
        self._cancel()
        if not body.is_eof():
            self._body = body
            self._deadline(self._guard.limits.body_timeout_s)

    def response_ready(self) -> None:
        """The handler returned: the next request may start (the idle timeout meanwhile)."""
        self._idle, self._body = True, None
        self._deadline(self._guard.limits.idle_timeout_s)

    def _deadline(self, after_s: float) -> None:
        self._cancel()
        self._timer = self._loop.call_later(after_s, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._body is not None:
            if self._body.is_eof():  # the whole body came in time; the handler runs unbounded
                self._body = None
                return
            why = "request body not complete in time"
        else:
            why = "idle" if self._idle else "request head not complete in time"
        self._guard.expired(self.address, why)
        if self.transport is not None:
            self.transport.abort()


class HttpGuard:
    """The limits of one HTTP port: counts its connections, owns its middleware."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._connections: dict[asyncio.BaseTransport, _Guarded] = {}
        self._per_address: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.expirations = 0

    @property
    def connections(self) -> int:
        return len(self._connections)

    def protocol(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory)

    def admit(self, connection: _Guarded) -> bool:
        limits = self.limits
        if (
            len(self._connections) >= limits.connections_max
            or self._per_address[connection.address] >= limits.connections_per_address_max
        ):
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # the 1st, 2nd, 4th, 8th... refusal
                log.warning(
                    "HTTP connection limit: refusing %s (%d so far)",
                    connection.address,
                    self.refused,
                )
            return False
        assert connection.transport is not None
        self._connections[connection.transport] = connection
        self._per_address[connection.address] += 1
        return True

    def forget(self, connection: _Guarded) -> None:
        if self._connections.pop(cast(asyncio.BaseTransport, connection.transport), None) is None:
            return
        self._per_address[connection.address] -= 1
        if not self._per_address[connection.address]:
            del self._per_address[connection.address]

    def expired(self, address: str, why: str) -> None:
        self.expirations += 1
        if self.expirations & (self.expirations - 1) == 0:
            log.warning(
                "HTTP: closing a connection from %s: %s (%d so far)", address, why, self.expirations
            )

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        connection = self._connections.get(cast(asyncio.BaseTransport, request.transport))
        if connection is not None:
            connection.head_received(request.content)
        try:
            declared = request.content_length
            if declared is not None and declared > self.limits.body_bytes_max:
                limit = self.limits.body_bytes_max
                error = {"code": "too_large", "message": f"the body is limited to {limit} bytes"}
                raise web.HTTPRequestEntityTooLarge(
                    limit, declared, text=json.dumps({"error": error}),
                    content_type="application/json",
                )
            return await handler(request)
        finally:
            if connection is not None:
                connection.response_ready()


class GuardedSite(web.SockSite):
    """aiohttp's site on a bound socket, each connection inside the guard."""

    def __init__(self, runner: web.BaseRunner, sock: object, guard: HttpGuard, **kw: object):
        super().__init__(runner, sock, **kw)  # type: ignore[arg-type]
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol(cast(Callable[[], asyncio.Protocol], server)),
            sock=self._sock,
            backlog=self._backlog,
            ssl=self._ssl_context,  # TLS when the site was given a context (the HIS port)
        )

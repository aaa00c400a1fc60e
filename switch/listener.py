"""A framed TCP listener: length-prefixed frames in, a handler per frame, replies out.

Many connections, many outstanding requests per connection (a task per frame; replies may
leave out of order — terminals match them by STAN), an idle and a read timeout, a maximum frame
size, a connection limit, and a graceful close that stops accepting, lets in-flight requests
finish and their replies go out, then closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from messages.errors import FramingError
from messages.framing import FrameDecoder, LengthFormat, encode_frame

log = logging.getLogger("medswitch.listener")

Handler = Callable[[bytes, str], Awaitable[bytes | None]]


class Hangup(Exception):
    """Raised by a handler that has no answer a peer could match (a frame whose message type
    the interface does not define): its connection is closed."""


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str
    port: int
    length_format: LengthFormat
    frame_bytes_max: int = 8192
    connections_max: int = 2000
    idle_timeout_s: float = 300.0
    read_timeout_s: float = 30.0
    reuse_port: bool = False


class _Connection(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        settings = listener.settings
        self._decoder = FrameDecoder(settings.length_format, settings.frame_bytes_max)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._heard_at = self._loop.time()  # when the peer last sent bytes
        self._peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a registered subclass
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self._listener.admit(self):
            log.warning("connection limit reached; refusing %s", self._peer)
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # uvloop already sets it on its own sockets
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._listener.forget(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FramingError as err:
            log.warning("closing %s: %s", self._peer, err)
            self.close()
            return
        for frame in frames:
            self._listener.spawn(self._serve(frame))
        self._heard_at = self._loop.time()  # the timer, when it fires, waits on from here
        if self._decoder.buffered_bytes:  # a frame begun: the (shorter) read timeout from now
            self._rearm()

    async def _serve(self, frame: bytes) -> None:
        try:
            reply = await self._listener.handler(frame, self._peer)
        except Hangup as reason:
            log.warning("closing %s: %s", self._peer, reason)
            self.close()
            return
        transport = self._transport
        if reply is not None and transport is not None and not transport.is_closing():
            transport.write(encode_frame(reply, self._listener.settings.length_format))

    def _arm(self) -> None:
        """One timer per connection, re-armed when it fires, not at every frame (a timer handle
        per frame cost more than the frame's framing)."""
        self._timer = self._loop.call_at(self._heard_at + self._timeout_s(), self._check)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._arm()

    def _timeout_s(self) -> float:
        settings = self._listener.settings
        return settings.read_timeout_s if self._decoder.buffered_bytes else settings.idle_timeout_s

    def _check(self) -> None:
        """The timer fired: close if the peer was silent for the whole timeout (a frame begun
        and not completed: the read timeout; nothing: the idle timeout), else wait on."""
        if self._transport is None:
            return
        if self._loop.time() < self._heard_at + self._timeout_s():
            self._arm()
            return
        self._expire()

    def _expire(self) -> None:
        log.info(
            "closing %s: %s",
            self._peer,
            "frame not completed in time" if self._decoder.buffered_bytes else "idle",
        )
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Listener:
    """One listening socket with its connections and in-flight requests."""

    def __init__(self, settings: ListenerSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_port=self.settings.reuse_port or None,
            backlog=1024,
        )

    def admit(self, connection: _Connection) -> bool:
        if len(self._connections) >= self.settings.connections_max:
            return False
        self._connections.add(connection)
        return True

    def forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request failed", exc_info=task.exception())

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests answer (bounded), close connections."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout_s)
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()

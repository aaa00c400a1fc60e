"""A framed TCP listener: length-prefixed frames in, a handler per frame, replies out.

Many connections, several outstanding requests per connection (a handler's answer per frame;
replies may leave out of order — terminals match them by STAN). Everything a peer can make the
daemon hold has a bound:

- **Requests in flight** per connection: at most ``in_flight_max`` handlers run for one
  connection. At the mark the transport stops reading (``pause_reading``): the peer's further
  frames wait in its own socket buffers, not in the daemon. Frames already read when the mark
  was reached wait in the connection's queue (at most one read's worth); reading resumes once
  the queue is empty and the requests in flight have fallen to half the mark.
- **Replies waiting to be written**: the transport's write buffer has ``write_buffer_bytes_max``
  as its high-water mark; above it (``pause_writing``) reading stops as well, and resumes when
  the buffer drains (``resume_writing``). A peer that sends without reading therefore stops
  being read: its memory is bounded by the mark plus the replies of the requests in flight.
- **Time**: a frame must be complete within ``read_timeout_s`` of its first byte (a whole-frame
  deadline: a peer trickling a byte a second is cut); a connection from which nothing arrives
  for ``idle_timeout_s`` is closed. While reading is paused by the daemon, the frame deadline
  does not run (it restarts when reading resumes); the idle timeout does, so a peer that never
  reads its replies is closed after ``idle_timeout_s`` (aborted: its unsent replies dropped).
- **Connections**: ``connections_max`` in all and ``connections_per_address_max`` from one IP
  address, and only from ``allowed_addresses`` when it names any (a bank link's peers); a
  connection over a cap or from elsewhere is closed as soon as it is accepted.
- **Bad input**: a length header that cannot be a frame's (not digits, zero, above
  ``frame_bytes_max``) closes the connection at once — the stream cannot be resynchronised. A
  frame the handler cannot read even enough of to refuse (it returns ``None``) ends the
  connection too: nothing more is read, the requests before it are answered, then it closes.
  Either is one warning line, and warnings are rate-limited (`switch.ratelimit`) so a flood of
  garbage cannot flood the log; length-header errors are counted through ``on_malformed``
  (the handler counts the frames it reads).

**Drain** (SIGTERM): :meth:`Listener.stop_accepting` closes the listening socket and stops
reading on every connection, so no new request is taken; frames already read (in flight or
queued) are answered; each connection closes once it has none left and its replies are flushed
(``transport.close`` writes its buffer out first). :meth:`Listener.close` waits for that up to
``drain_timeout_s``, then aborts what is left and stops waiting for the answers still
outstanding (cancelled; a pipeline's work runs on: `switch.pipeline`).

A connection that ends this way (drain, or an unanswerable frame) sends FIN once its replies
are out and then reads and drops what the peer still sends for ``LINGER_S`` (longer while a
slow reader is still taking replies, up to ``idle_timeout_s``) before it closes: closing a
socket with unread input sends a reset, which can destroy replies the peer has not read. A
peer that ends its own side (EOF) after its requests is answered in the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import cast

from messages.errors import FramingError
from messages.framing import FrameDecoder, encode_frame
from switch.listener_settings import ListenerSettings, ListenLimits, listener_settings
from switch.ratelimit import RateLimitedWarnings

__all__ = [
    "Handler",
    "ListenLimits",
    "Listener",
    "ListenerSettings",
    "listener_settings",
]

log = logging.getLogger("medswitch.listener")

#: A frame and its peer in; the reply out. ``None``: the frame cannot be answered at all (not
#: even with a format error) — the listener answers what came before it and closes.
Handler = Callable[[bytes, str], Awaitable[bytes | None]]

_IN_FLIGHT, _WRITING, _DRAINING = 1, 2, 4  # why reading is paused (bits)
LINGER_S = 2.0  # after the last reply of a connection that ends: the peer's bytes dropped


class _Connection(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._settings = settings = listener.settings
        self._decoder = FrameDecoder(
            settings.length_format, settings.frame_bytes_max, settings.measure
        )
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop = asyncio.get_running_loop()
        self._heard_at = self._loop.time()  # when the peer last sent bytes
        self._frame_at = self._heard_at  # when the frame being received began
        self._waiting: collections.deque[bytes] = collections.deque()  # read, not yet started
        self._in_flight = 0
        self._paused = 0  # _IN_FLIGHT | _WRITING | _DRAINING
        self._ending = False  # no more reading: close once the requests taken are answered
        self._lingering = False  # our side ended; the peer's last bytes read and dropped
        self._peer_ended = False  # the peer's side ended (EOF)
        self.address = "?"
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a registered subclass
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address, self.peer = str(peer[0]), f"{peer[0]}:{peer[1]}"
        if not self._listener.admit(self):
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # uvloop already sets it on its own sockets
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self._settings.write_buffer_bytes_max)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._waiting.clear()
        self._transport = None
        self._listener.forget(self)

    def data_received(self, data: bytes) -> None:
        now = self._heard_at = self._loop.time()
        if self._ending:  # lingering, or read before pause_reading took effect: not taken
            return
        continuing = self._decoder.buffered_bytes > 0
        try:
            frames = self._decoder.feed(data)
        except FramingError as err:
            self._listener.malformed(self, str(err))
            self.abort()
            return
        if frames:
            self._waiting.extend(frames)
            self._start_waiting()
        if self._decoder.buffered_bytes and (frames or not continuing):  # a new frame began
            self._frame_at = now
            if self._deadline() < self._timer_at:
                self._rearm()

    def eof_received(self) -> bool:
        """The peer sends no more: answer what it sent, then close (True keeps our side open
        for the replies)."""
        self._peer_ended = True
        if self._lingering or not (self._in_flight or self._waiting):
            return False
        self.end()
        return True

    def pause_writing(self) -> None:
        self._pause(_WRITING)

    def resume_writing(self) -> None:
        self._resume(_WRITING)
        if self._waiting:
            self._start_waiting()

    def _start_waiting(self) -> None:
        in_flight_max = self._settings.in_flight_max
        while self._waiting and self._in_flight < in_flight_max and not self._paused & _WRITING:
            self._in_flight += 1
            self._listener.spawn(self, self._waiting.popleft())
        if self._waiting or self._in_flight >= in_flight_max:
            self._pause(_IN_FLIGHT)

    def served(self, answer: asyncio.Future[bytes | None]) -> None:
        """A handler's answer is known (its future's callback: no task per frame here)."""
        self._listener.done(answer)
        reply: bytes | None = b""  # stays b"" if the handler failed or was cancelled
        if not answer.cancelled() and answer.exception() is None:
            reply = answer.result()
        self._answered(reply)

    def _answered(self, reply: bytes | None) -> None:
        self._in_flight -= 1
        assert self._in_flight >= 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if reply is None:
            self._listener.unreadable(self)
            self._waiting.clear()  # what follows an unreadable frame is not taken either
            self.end()
        elif reply:
            transport.write(encode_frame(reply, self._settings.length_format))
        if self._waiting:
            self._start_waiting()
        if self._ending:
            self._close_when_answered()
        elif not self._waiting and self._in_flight <= self._settings.in_flight_max // 2:
            self._resume(_IN_FLIGHT)

    def _pause(self, reason: int) -> None:
        if not self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        transport = self._transport
        if not self._paused and transport is not None and not transport.is_closing():
            transport.resume_reading()
            self._frame_at = self._loop.time()  # the deadline did not run while paused
            if self._deadline() < self._timer_at:  # a frame begun: its deadline, not idle's
                self._rearm()

    def end(self) -> None:
        """Stop reading; close once every request taken is answered and its reply flushed."""
        self._ending = True
        self._pause(_DRAINING)
        self._close_when_answered()

    def _close_when_answered(self) -> None:
        """Every request taken is answered: end our side once the replies are out (FIN), and
        read and drop what the peer still sends for up to ``LINGER_S`` — closing a socket with
        unread bytes would send a reset, which can destroy replies the peer has not read yet."""
        transport = self._transport
        if self._waiting or self._in_flight or transport is None or self._lingering:
            return
        if self._peer_ended or not transport.can_write_eof():
            transport.close()  # writes out what is buffered, then closes
            return
        self._lingering = True
        transport.write_eof()
        transport.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(LINGER_S, self._linger_ended, self._loop.time())

    def _linger_ended(self, since: float) -> None:
        """Close; but while replies are still going out to a peer that reads them slowly, wait
        on (up to the idle timeout; the drain aborts sooner at its own timeout)."""
        transport = self._transport
        if transport is None:
            return
        if not transport.get_write_buffer_size():
            transport.close()
        elif self._loop.time() - since < self._settings.idle_timeout_s:
            self._timer = self._loop.call_later(LINGER_S, self._linger_ended, since)
        else:
            self.abort()

    def _arm(self) -> None:
        """One timer per connection, re-armed when it fires, not at every frame (a timer handle
        per frame cost more than the frame's framing)."""
        self._timer_at = self._deadline()
        self._timer = self._loop.call_at(self._timer_at, self._check)

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._arm()

    def _deadline(self) -> float:
        settings = self._settings
        if self._decoder.buffered_bytes and not self._paused:
            return self._frame_at + settings.read_timeout_s
        return self._heard_at + settings.idle_timeout_s

    def _check(self) -> None:
        """The timer fired: close if the deadline passed (a frame begun: its whole-frame
        deadline; else the idle timeout), else wait on."""
        if self._transport is None or self._transport.is_closing() or self._lingering:
            return
        if self._loop.time() < self._deadline():
            self._arm()
            return
        partial = self._decoder.buffered_bytes and not self._paused
        self._listener.expired(self, "frame not completed in time" if partial else "idle")
        self.abort()

    @property
    def write_buffered_bytes(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close now, dropping unsent replies (a peer that does not read would hold a closing
        transport, and its descriptor, for ever)."""
        if self._transport is not None:
            self._transport.abort()


class Listener:
    """One listening socket with its connections and in-flight requests."""

    def __init__(
        self,
        settings: ListenerSettings,
        handler: Handler,
        on_malformed: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self._on_malformed = on_malformed
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._per_address: collections.Counter[str] = collections.Counter()
        self._answers: set[asyncio.Future[bytes | None]] = set()  # the handlers' answers
        self._warnings: RateLimitedWarnings | None = None
        self._draining = False
        self._emptied = asyncio.Event()

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
        return len(self._answers)

    @property
    def write_buffered_bytes(self) -> int:
        """Replies written and not yet taken by the peers' sockets."""
        return sum(connection.write_buffered_bytes for connection in self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._warnings = RateLimitedWarnings(log, loop.time)
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_port=self.settings.reuse_port or None,
            backlog=self.settings.backlog,
        )

    def admit(self, connection: _Connection) -> bool:
        settings = self.settings
        if self._draining:
            return False
        if settings.allowed_addresses and connection.address not in settings.allowed_addresses:
            self._warn("%s is not an allowed peer; refused", connection.peer)
            return False
        if len(self._connections) >= settings.connections_max:
            self._warn(
                "connection limit %d reached; refusing %s",
                settings.connections_max,
                connection.peer,
            )
            return False
        if self._per_address[connection.address] >= settings.connections_per_address_max:
            self._warn(
                "%d connections from %s already; refusing %s",
                settings.connections_per_address_max,
                connection.address,
                connection.peer,
            )
            return False
        self._connections.add(connection)
        self._per_address[connection.address] += 1
        return True

    def forget(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return  # refused at admission
        self._connections.discard(connection)
        self._per_address[connection.address] -= 1
        if not self._per_address[connection.address]:
            del self._per_address[connection.address]
        if self._draining and not self._connections:
            self._emptied.set()

    def malformed(self, connection: _Connection, why: str) -> None:
        """A length header no frame can have: counted, one (rate-limited) line."""
        if self._on_malformed is not None:
            self._on_malformed()
        self._warn("closing %s: %s", connection.peer, why)

    def unreadable(self, connection: _Connection) -> None:
        self._warn("closing %s: a frame that cannot be answered", connection.peer)

    def expired(self, connection: _Connection, why: str) -> None:
        self._warn("closing %s: %s", connection.peer, why)

    def _warn(self, message: str, *args: object) -> None:
        if self._warnings is not None:
            self._warnings.warning(message, *args)

    def spawn(self, connection: _Connection, frame: bytes) -> None:
        """Hand ``frame`` to the handler; ``connection`` sends its answer. A handler that
        returns a future (`switch.pipeline.Pipeline.handle`) costs no task here."""
        answer: asyncio.Future[bytes | None]
        try:
            answer = asyncio.ensure_future(self.handler(frame, connection.peer))
        except Exception as error:  # failed before it awaited: as if its awaitable raised
            answer = asyncio.get_running_loop().create_future()
            answer.set_exception(error)
        self._answers.add(answer)
        answer.add_done_callback(connection.served)

    def done(self, answer: asyncio.Future[bytes | None]) -> None:
        self._answers.discard(answer)
        if not answer.cancelled() and answer.exception() is not None:
            log.error("request failed", exc_info=answer.exception())

    def stop_accepting(self) -> None:
        """The drain's first step: no new connection, no new request (idempotent)."""
        if self._draining:
            return
        self._draining = True
        if self._server is not None:
            self._server.close()
        if not self._connections:
            self._emptied.set()
        for connection in list(self._connections):
            connection.end()

    async def close(self, drain_timeout_s: float | None = None) -> None:
        """Stop accepting and reading, answer what was read, flush, close (bounded by the
        drain timeout; then what is left is aborted and its answers cancelled)."""
        self.stop_accepting()
        timeout_s = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), timeout_s)
        if self._connections:
            log.warning(
                "drain: %d connections not done in %.1f s; aborted",
                len(self._connections),
                timeout_s,
            )
        for connection in list(self._connections):
            connection.abort()
        for answer in list(self._answers):
            answer.cancel()
        if self._answers:
            await asyncio.wait(set(self._answers), timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()

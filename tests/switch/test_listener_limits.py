"""The framed listener's bounds, over real sockets on 127.0.0.1 (port 0): requests in flight
per connection, replies a peer does not read, a whole-frame deadline, connections per address
and in all, frames that cannot be answered, and a drain that answers what it read."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from messages.framing import FrameDecoder, LengthFormat, encode_frame
from switch.listener import Listener, ListenerSettings

B2 = LengthFormat.BINARY2


def _settings(**changes: object) -> ListenerSettings:
    return ListenerSettings("127.0.0.1", 0, B2, **changes)  # type: ignore[arg-type]


async def _echo(frame: bytes, peer: str) -> bytes:
    return frame


async def _started(
    handler: Callable[[bytes, str], Awaitable[bytes | None]] = _echo,
    on_malformed: Callable[[], object] | None = None,
    **changes: object,
) -> Listener:
    listener = Listener(_settings(**changes), handler, on_malformed)
    await listener.start()
    return listener


async def _replies(reader: asyncio.StreamReader, count: int, timeout_s: float = 5) -> list[bytes]:
    decoder, frames = FrameDecoder(B2), []
    deadline = time.monotonic() + timeout_s
    while len(frames) < count and time.monotonic() < deadline:
        data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        if not data:
            break
        frames += decoder.feed(data)
    return frames


async def _closed(reader: asyncio.StreamReader, timeout_s: float = 5) -> bool:
    """True if the server closes the connection within ``timeout_s`` (replies read and left)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
    return False


def test_requests_in_flight_per_connection_are_capped() -> None:
    asyncio.run(_in_flight_capped())


async def _in_flight_capped() -> None:
    running, most = 0, 0
    release = asyncio.Event()

    async def slow(frame: bytes, peer: str) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return frame

    listener = await _started(slow, in_flight_max=4)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"".join(encode_frame(b"r%03d" % n, B2) for n in range(100)))
        await writer.drain()
        for _ in range(50):  # until the listener has taken what it will take
            await asyncio.sleep(0.01)
        assert most == 4 and listener.in_flight == 4
        release.set()
        replies = await _replies(reader, 100)
        assert sorted(replies) == [b"r%03d" % n for n in range(100)]
        assert most == 4
        writer.close()
    finally:
        await listener.close()


def test_a_peer_that_does_not_read_stops_being_read() -> None:
    asyncio.run(_not_reading())


async def _not_reading() -> None:
    handled = 0

    async def big_reply(frame: bytes, peer: str) -> bytes:
        nonlocal handled
        handled += 1
        return b"x" * 4000

    listener = await _started(big_reply, write_buffer_bytes_max=65_536, in_flight_max=8)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: the window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", listener.port))
        _reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        frames = 20_000  # 80 MB of replies if they were all made
        writer.write(b"".join(encode_frame(b"q%05d" % n, B2) for n in range(frames)))
        writer.transport.pause_reading()  # the client reads nothing
        for _ in range(100):
            await asyncio.sleep(0.02)
        buffered = listener.write_buffered_bytes
        assert handled < frames, handled  # the listener stopped reading
        assert buffered <= 65_536 + 8 * 4002, buffered
        writer.transport.abort()
    finally:
        await listener.close(drain_timeout_s=0.5)


def test_a_frame_must_be_complete_within_the_read_timeout_of_its_first_byte() -> None:
    asyncio.run(_trickle())


async def _trickle() -> None:
    listener = await _started(read_timeout_s=0.4, idle_timeout_s=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.monotonic()
        frame = encode_frame(b"z" * 60, B2)
        cut_at = None
        for byte in frame:  # a byte every 0.05 s: each well within the read timeout
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            if reader.at_eof() or await _closed(reader, 0.05):
                cut_at = time.monotonic() - started
                break
        assert cut_at is not None and 0.35 <= cut_at < 1.0, cut_at
        writer.close()
    finally:
        await listener.close()


def test_connections_are_capped_per_address_and_in_all() -> None:
    asyncio.run(_capped())


async def _capped() -> None:
    listener = await _started(connections_per_address_max=3, connections_max=5)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(3):
            opened.append(await asyncio.open_connection("127.0.0.1", listener.port))
        fourth = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await _closed(fourth[0], 2)
        other = await asyncio.open_connection(  # another address on loopback: admitted
            "127.0.0.1", listener.port, local_addr=("127.0.0.2", 0)
        )
        other[1].write(encode_frame(b"hi", B2))
        assert await _replies(other[0], 1) == [b"hi"]
        opened.append(other)
        opened.append(
            await asyncio.open_connection("127.0.0.1", listener.port, local_addr=("127.0.0.3", 0))
        )
        sixth = await asyncio.open_connection(
            "127.0.0.1", listener.port, local_addr=("127.0.0.4", 0)
        )
        assert await _closed(sixth[0], 2)  # five in all
        assert listener.connections == 5
        for reader, writer in opened:  # those admitted still work
            writer.write(encode_frame(b"ok", B2))
            assert await _replies(reader, 1) == [b"ok"]
    finally:
        for _, writer in opened:
            writer.close()
        await listener.close()


def test_an_unanswerable_frame_ends_the_connection_after_the_replies_before_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asyncio.run(_unanswerable())
    closing = [r for r in caplog.records if "cannot be answered" in r.getMessage()]
    assert len(closing) == 1


async def _unanswerable() -> None:
    async def refuse_garbage(frame: bytes, peer: str) -> bytes | None:
        await asyncio.sleep(0.05 if frame == b"first" else 0)
        return None if frame == b"garbage" else frame

    listener = await _started(refuse_garbage, in_flight_max=1)  # one at a time: in order
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"".join(encode_frame(f, B2) for f in (b"first", b"garbage", b"after")))
        assert await _replies(reader, 3) == [b"first"]  # then the end of the stream
        assert reader.at_eof()
        writer.close()
    finally:
        await listener.close()


def test_bad_length_headers_close_the_connection_counted_and_logged_within_a_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "medswitch.listener")
    counted = asyncio.run(_bad_headers())
    assert counted == 40
    lines = [r for r in caplog.records if r.name == "medswitch.listener"]
    assert len(lines) <= 10


async def _bad_headers() -> int:
    counted = 0

    def count() -> None:
        nonlocal counted
        counted += 1

    listener = await _started(_echo, count, frame_bytes_max=100)
    try:
        for n in range(40):  # a zero length, a length above the maximum
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"\x00\x00" if n % 2 else b"\xff\xffabc")
            assert await _closed(reader, 2)
            writer.close()
    finally:
        await listener.close()
    return counted


def test_the_drain_answers_every_request_it_read_and_reads_no_more() -> None:
    asyncio.run(_drain())


async def _drain() -> None:
    handled: list[bytes] = []

    async def slow(frame: bytes, peer: str) -> bytes:
        handled.append(frame)
        await asyncio.sleep(0.2)
        return frame

    listener = await _started(slow, in_flight_max=64)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)

    async def keep_sending() -> None:
        for n in range(200):
            writer.write(encode_frame(b"s%03d" % n, B2))
            await asyncio.sleep(0.005)

    sending = asyncio.ensure_future(keep_sending())
    await asyncio.sleep(0.1)
    closing = asyncio.ensure_future(listener.close(drain_timeout_s=5))
    replies = await _replies(reader, 200, timeout_s=8)
    await closing
    sending.cancel()
    assert handled and len(handled) < 200  # SIGTERM came mid-burst
    assert sorted(replies) == sorted(handled)  # every request read was answered
    assert reader.at_eof()
    writer.close()


def test_only_allowed_addresses_are_admitted() -> None:
    asyncio.run(_allowed())


async def _allowed() -> None:
    listener = await _started(allowed_addresses=("127.0.0.1",))
    try:
        stranger = await asyncio.open_connection(
            "127.0.0.1", listener.port, local_addr=("127.0.0.2", 0)
        )
        assert await _closed(stranger[0], 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(encode_frame(b"hello", B2))
        assert await _replies(reader, 1) == [b"hello"]
        writer.close()
        stranger[1].close()
    finally:
        await listener.close()


def test_a_frame_begun_while_reading_was_paused_has_its_deadline_from_the_resume() -> None:
    asyncio.run(_paused_then_trickle())


async def _paused_then_trickle() -> None:
    async def slow(frame: bytes, peer: str) -> bytes:
        await asyncio.sleep(0.3)
        return frame

    listener = await _started(slow, in_flight_max=1, read_timeout_s=0.3, idle_timeout_s=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.monotonic()
        writer.write(encode_frame(b"whole", B2) + b"\x00\x20abc")  # then a frame never finished
        assert await _replies(reader, 1) == [b"whole"]
        assert await _closed(reader, 3)
        assert time.monotonic() - started < 1.5  # 0.3 s handling, then the 0.3 s deadline
        writer.close()
    finally:
        await listener.close()


def test_a_peer_that_ends_its_side_still_gets_every_reply() -> None:
    asyncio.run(_half_closed())


async def _half_closed() -> None:
    async def slow(frame: bytes, peer: str) -> bytes:
        await asyncio.sleep(0.1)
        return frame

    listener = await _started(slow)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"".join(encode_frame(b"h%d" % n, B2) for n in range(5)))
        writer.write_eof()  # sent everything; now waits for the replies
        replies = await _replies(reader, 6)  # 5, then the end of the stream
        assert sorted(replies) == [b"h%d" % n for n in range(5)]
        assert reader.at_eof()
        writer.close()
    finally:
        await listener.close()

"""The framed listener's timeouts, over real sockets on 127.0.0.1: a silent connection closes
after the idle timeout, a frame begun and not completed after the (shorter) read timeout, and
a connection that keeps sending whole frames stays open past both."""

from __future__ import annotations

import asyncio
import time

import pytest

from messages.framing import LengthFormat, encode_frame
from switch.listener import Listener, ListenerSettings

IDLE_S, READ_S = 0.6, 0.2


async def _echo(frame: bytes, peer: str) -> bytes:
    return frame


async def _listener() -> Listener:
    settings = ListenerSettings(
        "127.0.0.1", 0, LengthFormat.BINARY2, idle_timeout_s=IDLE_S, read_timeout_s=READ_S
    )
    listener = Listener(settings, _echo)
    await listener.start()
    return listener


async def _closed_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from ``started`` until the server closed the connection (bounded)."""
    data = await asyncio.wait_for(reader.read(), timeout=5)
    assert data == b""
    return time.monotonic() - started


@pytest.mark.parametrize("partial", [False, True])
def test_a_silent_or_stalled_connection_is_closed(partial: bool) -> None:
    asyncio.run(_silent_or_stalled(partial))


async def _silent_or_stalled(partial: bool) -> None:
    listener = await _listener()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        started = time.monotonic()
        if partial:  # half a frame, then nothing: the read timeout
            writer.write(b"\x00\x10abc")
            await writer.drain()
        waited = await _closed_after(reader, started)
        expected = READ_S if partial else IDLE_S
        assert expected * 0.9 <= waited < expected + 0.3
        writer.close()
    finally:
        await listener.close()


def test_a_talking_connection_stays_open() -> None:
    asyncio.run(_talking())


async def _talking() -> None:
    listener = await _listener()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for n in range(8):  # 8 x 0.15 s: past the idle timeout twice over, each frame answered
            writer.write(encode_frame(b"ping%d" % n, LengthFormat.BINARY2))
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(7), timeout=5) == b"\x00\x05ping%d" % n
            await asyncio.sleep(0.15)
        assert listener.connections == 1
        writer.close()
    finally:
        await listener.close()

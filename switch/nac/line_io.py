"""A modem line's device: a pseudo-terminal pair (tests, simulation) or a serial device through
pyserial, read and written from the event loop, and the line's speed emulated.

A pty line links its terminal side at the configured path; a terminal opens that path. Each call
gets a fresh pair: when either side hangs up (the terminal closes its side, as a modem drops DTR;
the controller drops the carrier by closing its side) the pair is closed and a new one, under
another terminal name, linked in its place (a terminal dialling again waits for the new name,
so it never reopens the pair of the call that ended). Until the terminal's first byte the
controller holds the terminal side open itself, so a line nobody has opened yet does not read
as hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from pathlib import Path
from typing import Protocol

import serial

READ_BYTES = 4096
QUEUED_BYTES_MAX = 65_536  # read from the device and not yet taken: reading pauses above this
WRITE_WAITS_MAX = 2_000  # 5 ms each: a terminal that takes nothing for 10 s has hung up
BITS_PER_BYTE = 10  # 8N1: start, eight data bits, stop
PACE_SLICE_S = 0.05


class LineDevice(Protocol):
    def open(self) -> None: ...

    async def read(self, timeout_s: float | None) -> bytes | None:
        """Bytes; ``b""``: the other side hung up; ``None``: nothing within ``timeout_s``."""
        ...

    async def write(self, data: bytes) -> bool:
        """False: the other side hung up."""
        ...

    async def hang_up(self) -> None: ...

    def close(self) -> None: ...


class FdStream:
    """A non-blocking file descriptor on the running loop: reads queued, writes retried."""

    def __init__(self, fd: int, on_first: Callback | None = None) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0
        self._reading = False
        self._on_first = on_first
        self.ended = False
        self._resume()

    def _resume(self) -> None:
        if not self._reading and not self.ended:
            self._loop.add_reader(self.fd, self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        if not data:
            self._pause()
            self.ended = True
        elif self._on_first is not None:
            self._on_first()
            self._on_first = None
        self._queued += len(data)
        if self._queued > QUEUED_BYTES_MAX:
            self._pause()
        self._chunks.put_nowait(data)

    async def read(self, timeout_s: float | None) -> bytes | None:
        if self._chunks.empty() and self.ended:
            return b""
        try:
            data = await asyncio.wait_for(self._chunks.get(), timeout_s)
        except TimeoutError:
            return None
        self._queued -= len(data)
        if self._queued <= QUEUED_BYTES_MAX:
            self._resume()
        return data

    async def write(self, data: bytes) -> bool:
        view = memoryview(data)
        for _ in range(WRITE_WAITS_MAX):
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                written = 0
            except OSError:
                return False
            view = view[written:]
            if not view:
                return True
            await asyncio.sleep(0.005)
        return False

    def close(self) -> None:
        self._pause()
        self.ended = True


class Callback(Protocol):
    def __call__(self) -> None: ...


class PtyLine:
    """A pseudo-terminal pair per call, its terminal side linked at ``link``."""

    def __init__(self, link: Path, speed_bps: int) -> None:
        self.link = link
        self.speed_bps = speed_bps
        self._stream: FdStream | None = None
        self._slave: int | None = None  # held until the terminal's first byte

    def open(self) -> None:
        self.link.parent.mkdir(parents=True, exist_ok=True)
        master, slave = os.openpty()  # before the old pair closes: another terminal name
        tty.setraw(slave)
        os.set_blocking(master, False)
        temporary = self.link.with_name(f".{self.link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(os.ttyname(slave))
        temporary.replace(self.link)
        self._close_pair()
        self._slave = slave
        self._stream = FdStream(master, self._release)

    def _release(self) -> None:
        """The terminal has the line open: its close alone now reads as a hang-up."""
        slave, self._slave = self._slave, None
        if slave is not None:
            os.close(slave)

    async def read(self, timeout_s: float | None) -> bytes | None:
        assert self._stream is not None, "read before open"
        data = await self._stream.read(timeout_s)
        if data:  # the line carried these bytes at its speed
            await asyncio.sleep(len(data) * BITS_PER_BYTE / self.speed_bps)
        return data

    async def write(self, data: bytes) -> bool:
        assert self._stream is not None, "write before open"
        return await paced_write(self._stream, data, self.speed_bps)

    async def hang_up(self) -> None:
        """Nothing yet: the next ``open`` links a fresh pair, then closes this one (the carrier
        drops then), so the two never share a terminal name."""

    def close(self) -> None:
        """The line out of service: its pair closed and its link removed (a link left behind
        would name a terminal another program may get next)."""
        self._close_pair()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    def _close_pair(self) -> None:
        self._release()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
            os.close(stream.fd)


class SerialLine:
    """A serial device (a direct cable to a terminal, or a line card) through pyserial; the
    device paces the bytes itself. Hanging up drops DTR for half a second."""

    def __init__(self, device: str, speed_bps: int) -> None:
        self.device = device
        self.speed_bps = speed_bps
        self._port: serial.Serial | None = None
        self._stream: FdStream | None = None

    def open(self) -> None:
        if self._port is None:
            self._port = serial.Serial(self.device, self.speed_bps, timeout=0)
            self._stream = FdStream(self._port.fileno())

    async def read(self, timeout_s: float | None) -> bytes | None:
        assert self._stream is not None, "read before open"
        return await self._stream.read(timeout_s)

    async def write(self, data: bytes) -> bool:
        assert self._stream is not None, "write before open"
        return await self._stream.write(data)

    async def hang_up(self) -> None:
        if self._stream is not None and self._stream.ended:
            self.close()  # the device went away: opened again for the next call
            await asyncio.sleep(0.5)
            return
        if self._port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.dtr = False
                await asyncio.sleep(0.5)
                self._port.dtr = True

    def close(self) -> None:
        port, self._port = self._port, None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if port is not None:
            port.close()


async def paced_write(stream: FdStream, data: bytes, speed_bps: int) -> bool:
    """``data`` at ``speed_bps``: slices of 50 ms of line time, each followed by its time."""
    per_slice = max(1, int(speed_bps / BITS_PER_BYTE * PACE_SLICE_S))
    for start in range(0, len(data), per_slice):
        piece = data[start : start + per_slice]
        if not await stream.write(piece):
            return False
        await asyncio.sleep(len(piece) * BITS_PER_BYTE / speed_bps)
    return True

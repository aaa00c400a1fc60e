"""A terminal's modem line (specs/dialup.md): the serial port opened through pyserial (a real
device, or the terminal side of an access controller's pseudo-terminal line), the AT dialogue
(ATZ, ATE0, ATDT number → CONNECT), then frames in the line's framing until the line drops.
Closing the port drops DTR: the call ends. A dropped line is dialled again at the next exchange;
on a pty line, once the controller has linked a fresh pair (another terminal name).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import serial

from messages import hayes
from messages.errors import FramingError
from messages.line_framing import (
    ACK,
    NAK,
    RETRANSMISSIONS_MAX,
    Ack,
    BadFrame,
    Frame,
    LineDecoder,
    LineEvent,
    LineFraming,
    Nak,
    encode_line,
)

OPEN_TRIES = 100  # 20 ms apart: the controller links a fresh line after each call
READS_MAX = 10_000
REOPENS_MAX = 5
DIALOGUE_LINES_MAX = 32


@dataclass(frozen=True, slots=True)
class Dial:
    """Where and how a terminal dials: its modem's port, the number, the line's framing."""

    port: str
    number: str
    framing: LineFraming = LineFraming.CUP
    timeout_s: float = 10.0  # an answer, an acknowledgement
    dial_timeout_s: float = 30.0  # from ATD to its result
    pulse: bool = False


class LineDown(Exception):
    """The exchange failed; ``sent``: the request may have reached the centre."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class ModemLine:
    """One terminal's modem: dialled on demand, kept up between exchanges."""

    def __init__(self, dial: Dial) -> None:
        self.dial = dial
        self.calls = 0  # dials that connected
        self.speed_bps: int | None = None
        self._port: serial.Serial | None = None
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffer = b""
        self._ended = False
        self._last_target = ""
        self._in_call = False  # the device the last call used (a pty line is relinked after)

    @property
    def connected(self) -> bool:
        return self._port is not None and self._in_call

    async def exchange(self, payload: bytes) -> bytes:
        if self._port is None:
            await self._call()
        elif not self._in_call:  # hung up with ATH: the port is open, in command mode
            try:
                await self._dial()
            except LineDown:
                self.close()
                raise
        try:
            return await self._frames(payload)
        except LineDown:
            self.close()
            raise

    async def _call(self) -> None:
        for _ in range(REOPENS_MAX):
            # a line just hung up may still be the old one for a moment: it drops under the
            # first command, and the port is opened again (the controller links a fresh line)
            await self._attach(await self._open())
            try:
                result = await self._command("ATZ", self.dial.timeout_s)
                break
            except LineDown:
                self.close()
                await asyncio.sleep(0.05)
        else:
            raise LineDown(f"modem port {self.dial.port}: the line drops at once", sent=False)
        try:
            if result.kind is not hayes.ResultKind.OK:
                raise LineDown(f"modem: ATZ answered {result.kind.value}", sent=False)
            result = await self._command("ATE0", self.dial.timeout_s)
            if result.kind is not hayes.ResultKind.OK:
                raise LineDown(f"modem: ATE0 answered {result.kind.value}", sent=False)
            await self._dial()
        except LineDown:
            self.close()
            raise

    async def _dial(self) -> None:
        kind = "P" if self.dial.pulse else "T"
        result = await self._command(f"ATD{kind}{self.dial.number}", self.dial.dial_timeout_s)
        if result.kind is not hayes.ResultKind.CONNECT:
            raise LineDown(f"dial {self.dial.number}: {result.kind.value}", sent=False)
        self.calls += 1
        self.speed_bps = result.speed_bps
        self._in_call = True

    async def hang_up(self, guard_s: float = 1.0) -> None:
        """Hang up politely, the port kept open: ``guard_s`` of silence, ``+++``, the silence
        again (the modem answers OK in command mode), then ATH. A line that does not answer
        so is hung up by dropping DTR."""
        if self._port is None or not self._in_call:
            return
        try:
            await asyncio.sleep(guard_s)
            self._write(b"+++")
            if (await self._result("+++", guard_s + self.dial.timeout_s)).kind is not (
                hayes.ResultKind.OK
            ):
                raise LineDown("modem: no OK after +++", sent=False)
            if (await self._command("ATH", self.dial.timeout_s)).kind is not hayes.ResultKind.OK:
                raise LineDown("modem: ATH refused", sent=False)
            self._in_call = False
        except LineDown:
            self.close()

    async def _attach(self, port: serial.Serial) -> None:
        self._port, self._ended, self._buffer = port, False, b""
        self._chunks = asyncio.Queue()
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)

    async def _open(self) -> serial.Serial:
        for _ in range(OPEN_TRIES):
            target = os.path.realpath(self.dial.port)
            if os.path.islink(self.dial.port) and target == self._last_target:
                await asyncio.sleep(0.02)  # the line of the call that ended: not yet relinked
                continue
            try:
                port = serial.Serial(target, timeout=0, exclusive=False)
            except (serial.SerialException, OSError):
                await asyncio.sleep(0.02)
                continue
            self._last_target = target
            return port
        raise LineDown(f"modem port {self.dial.port} cannot be opened", sent=False)

    def _readable(self) -> None:
        assert self._port is not None
        try:
            data = os.read(self._port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._port.fileno())
            self._ended = True
        self._chunks.put_nowait(data)

    async def _read(self, timeout_s: float) -> bytes:
        if self._ended and self._chunks.empty():
            raise LineDown("the line dropped (NO CARRIER)", sent=True)
        try:
            data = await asyncio.wait_for(self._chunks.get(), timeout_s)
        except TimeoutError:
            raise LineDown("no answer on the line in time", sent=True) from None
        if not data:
            raise LineDown("the line dropped (NO CARRIER)", sent=True)
        return data

    def _write(self, data: bytes) -> None:
        assert self._port is not None
        try:
            self._port.write(data)
        except (serial.SerialException, OSError):
            raise LineDown("the line dropped (NO CARRIER)", sent=False) from None

    async def _command(self, command: str, timeout_s: float) -> hayes.Result:
        self._write(command.encode() + b"\r")
        return await self._result(command, timeout_s)

    async def _result(self, command: str, timeout_s: float) -> hayes.Result:
        """The modem's next result code (echoed and empty lines skipped)."""
        for _ in range(DIALOGUE_LINES_MAX):
            while b"\n" not in self._buffer:
                try:
                    self._buffer += await self._read(timeout_s)
                except LineDown as down:
                    raise LineDown(str(down), sent=False) from None
            line, _, self._buffer = self._buffer.partition(b"\n")
            result = hayes.parse_result(line)
            if result is not None:
                return result
        raise LineDown(f"modem: no result to {command}", sent=False)

    async def _frames(self, payload: bytes) -> bytes:
        framing = self.dial.framing
        decoder = LineDecoder(framing)
        events: list[LineEvent] = []
        leftover, self._buffer = self._buffer, b""  # bytes after the dialogue's last line
        events += self._decode(decoder, leftover)
        data = encode_line(payload, framing)
        for _ in range(1 + RETRANSMISSIONS_MAX):
            self._write(data)
            if framing is LineFraming.CUP or await self._acknowledged(decoder, events):
                break
        else:
            raise LineDown("the frame was refused (NAK) too often", sent=True)
        naks = 0
        for _ in range(READS_MAX):
            event = await self._next(decoder, events)
            if isinstance(event, Frame):
                if framing is LineFraming.STX:
                    self._write(bytes([ACK]))
                return event.payload
            if isinstance(event, BadFrame):
                naks += 1
                if naks > RETRANSMISSIONS_MAX:
                    raise LineDown("the answer arrived damaged too often", sent=True)
                self._write(bytes([NAK]))
        raise LineDown("no answer", sent=True)

    @staticmethod
    def _decode(decoder: LineDecoder, data: bytes) -> list[LineEvent]:
        try:
            return decoder.feed(data)
        except FramingError:
            raise LineDown("the line carried a frame that cannot be read", sent=True) from None

    async def _next(self, decoder: LineDecoder, events: list[LineEvent]) -> LineEvent:
        """The line's next event (``events``: decoded, not yet taken)."""
        for _ in range(READS_MAX):
            if events:
                return events.pop(0)
            events += self._decode(decoder, await self._read(self.dial.timeout_s))
        raise LineDown("no answer", sent=True)

    async def _acknowledged(self, decoder: LineDecoder, events: list[LineEvent]) -> bool:
        for _ in range(READS_MAX):
            event = await self._next(decoder, events)
            if isinstance(event, Ack):
                return True
            if isinstance(event, Nak):
                return False
        raise LineDown("no acknowledgement", sent=True)

    def close(self) -> None:
        """Hang up: the port closed, DTR dropped."""
        port, self._port = self._port, None
        self._in_call = False
        if port is not None:
            with contextlib.suppress(ValueError, OSError, RuntimeError):  # no loop: none to tell
                asyncio.get_running_loop().remove_reader(port.fileno())
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

"""One modem line of the access controller, call after call: the terminal's AT dialogue
(messages.hayes), then frames in the line's framing routed to a host and the answers written
back; the line dropped when the host does not answer, as a modem drops its carrier."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable

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
    Noise,
    encode_line,
)
from switch.nac.config import Faults, Line, Settings
from switch.nac.line_io import LineDevice
from switch.nac.stats import LineStats
from switch.nac.upstream import Dropped, Router

log = logging.getLogger("medswitch.nac")
NOISE = bytes([0xFF, 0x7E, 0x55, 0xAA])  # none of STX, ETX, ACK, NAK


class CallEnd(enum.Enum):
    HUNG_UP = "hung_up"  # the terminal closed the line (DTR dropped)
    DROPPED = "dropped"  # we dropped the carrier
    ESCAPED = "escaped"  # +++: command mode, the call still up


class LineRunner:
    """The line's calls, until cancelled."""

    def __init__(
        self,
        line: Line,
        device: LineDevice,
        settings: Settings,
        router: Router,
        stats: LineStats,
        calls_up: Callable[[int], int],
    ) -> None:
        self.line = line
        self.device = device
        self.settings = settings
        self.router = router
        self.stats = stats
        self.faults: Faults = line.faults  # every call's (the table's)
        self._injected: Faults | None = None  # the next call's only (tests, drills)
        self._call_faults = line.faults
        self._calls_up = calls_up  # add to the calls up; returns how many are up
        self._call = 0
        self._answers = 0  # frames written to the terminal in this call
        self._connected_at = 0.0
        self._backlog: list[LineEvent] = []  # decoded, not yet handled

    async def run(self) -> None:
        """Call after call; the device is open already (``Nac.start`` opens every line first,
        so a device that cannot be opened stops the start)."""
        try:
            while True:
                self.stats.state = "idle"
                await self._session()
                if self.stats.state == "connected":
                    self._end_call()
                await self.device.hang_up()
                await self._reopen()
        finally:
            self.device.close()

    async def _reopen(self) -> None:
        """The device for the next call; one that cannot be opened is tried again each second."""
        while True:
            try:
                self.device.open()
                return
            except OSError as error:
                self.stats.state = "out_of_service"
                log.error("line %s cannot be opened: %s", self.line.name, error)
                await asyncio.sleep(1.0)

    def inject(self, faults: Faults) -> None:
        """``faults`` for the line's next call only, instead of the table's."""
        self._injected = faults

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _session(self) -> None:
        """One opening of the line, until either side hangs up."""
        modem = hayes.AnsweringModem()
        while True:
            data = await self.device.read(None)
            if not data:
                return
            self.stats.state = "command" if self.stats.state == "idle" else self.stats.state
            step = modem.feed(data, self._now())
            if any(isinstance(event, hayes.HangUp) for event in step.events):
                self._end_call()  # before its OK is written
            if step.output and not await self.device.write(step.output):
                return
            for event in step.events:
                end = await self._event(event, modem)
                if end is CallEnd.ESCAPED:
                    if not await self.device.write(hayes.result_line(hayes.ResultKind.OK)):
                        return
                elif end is not None:
                    return

    async def _event(self, event: hayes.Event, modem: hayes.AnsweringModem) -> CallEnd | None:
        match event:
            case hayes.Dial(number, _):
                result = await self._answer(number)
                if not await self.device.write(hayes.result_line(*result)):
                    return CallEnd.HUNG_UP
                if result.kind is not hayes.ResultKind.CONNECT:
                    return None
                modem.in_call = True
                return await self._connected(modem)
            case hayes.Online():
                if not await self.device.write(
                    hayes.result_line(hayes.ResultKind.CONNECT, self.line.speed_bps)
                ):
                    return CallEnd.HUNG_UP
                return await self._connected(modem)
            case hayes.HangUp():
                self._end_call()
                self.stats.state = "command"
                return None
        return None

    async def _answer(self, number: str) -> hayes.Result:
        if number not in self.settings.numbers:
            self.stats.calls["no_answer"] += 1
            return hayes.Result(hayes.ResultKind.NO_ANSWER)
        if self._calls_up(0) >= self.settings.calls_max:
            self.stats.calls["busy"] += 1
            return hayes.Result(hayes.ResultKind.BUSY)
        self._call_faults, self._injected = self._injected or self.faults, None
        if self._call_faults.slow_answer_s:
            await asyncio.sleep(self._call_faults.slow_answer_s)
        self._call += 1
        self._answers = 0
        self._calls_up(1)
        self._connected_at = self._now()
        self.stats.calls["connect"] += 1
        self.stats.state = "connected"
        log.info("call %s on %s", self._call, self.line.name)
        return hayes.Result(hayes.ResultKind.CONNECT, self.line.speed_bps)

    def _end_call(self, cause: str | None = None) -> None:
        if self.stats.state != "connected":
            return
        self._calls_up(-1)
        seconds = self._now() - self._connected_at
        self.stats.connected_s += seconds
        self.stats.state = "command"
        if cause is not None:
            self.stats.failures[cause] += 1
        fields = {"line": self.line.name, "call": self._call, "seconds": round(seconds, 3)}
        log.info("call ended", extra={"fields": {**fields, "cause": cause or "hang-up"}})

    async def _connected(self, modem: hayes.AnsweringModem) -> CallEnd:
        decoder = LineDecoder(self.line.framing)
        self._backlog.clear()
        escape = hayes.EscapeDetector(self.settings.escape_guard_s)
        while True:
            deadline = escape.deadline()
            wait = self.settings.idle_timeout_s if deadline is None else deadline - self._now()
            data = await self.device.read(max(0.0, wait))
            if data is None:
                if escape.holding:
                    if escape.expire(self._now()):
                        return CallEnd.ESCAPED
                    data = escape.flush()
                else:
                    return self._drop("idle")
            elif not data:
                self._end_call("hangup_mid_frame" if decoder.buffered_bytes else None)
                modem.in_call = False
                return CallEnd.HUNG_UP
            else:
                data = escape.feed(data, self._now())
            self.stats.bytes_in += len(data)
            try:
                self._backlog += decoder.feed(data)
            except FramingError:
                return self._drop("bad_frame")
            while self._backlog:
                end = await self._line_event(self._backlog.pop(0), decoder)
                if end is not None:
                    modem.in_call = False
                    return end

    def _drop(self, cause: str) -> CallEnd:
        self._end_call(cause)
        log.warning("line dropped", extra={"fields": {"line": self.line.name, "cause": cause}})
        return CallEnd.DROPPED

    async def _line_event(self, event: LineEvent, decoder: LineDecoder) -> CallEnd | None:
        match event:
            case Frame(payload):
                self.stats.frames_in += 1
                if self.line.framing is LineFraming.STX and not await self.device.write(
                    bytes([ACK])
                ):
                    return CallEnd.HUNG_UP
                try:
                    answer = await self.router.exchange(payload, self.line.number, self._call)
                except Dropped as dropped:
                    return self._drop(dropped.cause)
                return await self._send(answer, decoder)
            case BadFrame():
                self.stats.bad_frames += 1
                if not await self.device.write(bytes([NAK])):
                    return CallEnd.HUNG_UP
            case Noise(count):
                self.stats.noise_bytes += count
            case Ack() | Nak():
                pass  # not waiting for one: stray
        return None

    async def _send(self, answer: bytes, decoder: LineDecoder) -> CallEnd | None:
        """The answer to the terminal; in STX framing until ACKed (NAK: sent again, at most
        ``RETRANSMISSIONS_MAX`` times)."""
        self._answers += 1
        data = encode_line(answer, self.line.framing)
        for _ in range(1 + RETRANSMISSIONS_MAX):
            if self._call_faults.noise_bytes:
                noise = (NOISE * 16)[: self._call_faults.noise_bytes]
                await self.device.write(noise)
            if self._answers in self._call_faults.drop_answer:
                await self.device.write(data[: len(data) // 2])
                return self._drop("fault")
            self.stats.frames_out += 1  # counted as it leaves (the line takes its time)
            self.stats.bytes_out += len(data)
            if not await self.device.write(data):
                return CallEnd.HUNG_UP
            if self.line.framing is LineFraming.CUP:
                return None
            reply = await self._acknowledgement(decoder)
            if reply is not None:
                return reply if isinstance(reply, CallEnd) else None
        return self._drop("retransmissions")

    async def _acknowledgement(self, decoder: LineDecoder) -> CallEnd | bool | None:
        """True: ACK; None: NAK (send again); a CallEnd: no acknowledgement at all."""
        for _ in range(64):  # bounded: other bytes before the ACK are noise
            data = await self.device.read(self.settings.answer_timeout_s)
            if data is None:
                return self._drop("retransmissions")
            if not data:
                return CallEnd.HUNG_UP
            self.stats.bytes_in += len(data)
            events = decoder.feed(data)
            for n, event in enumerate(events):
                if isinstance(event, Ack | Nak):
                    self._backlog += events[n + 1 :]  # what came after it, taken next
                    return True if isinstance(event, Ack) else None
        return self._drop("bad_frame")

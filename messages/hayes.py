"""Sans-IO Hayes (AT) modem dialogue, both sides: the answering side a line of the access
controller plays (``AnsweringModem``: commands in, result codes and events out) and the result
codes the dialling side reads (``parse_result``). No clock and no I/O here: the caller passes
the time in and writes what comes out (specs/dialup.md "The dialogue").

>>> modem = AnsweringModem()
>>> modem.feed(b"ATE0\\r", 0.0).output
b'ATE0\\r\\r\\nOK\\r\\n'
>>> step = modem.feed(b"ATDT 955-66\\r", 0.1)
>>> step.output, step.events
(b'', [Dial(number='95566', pulse=False)])
>>> parse_result(b"CONNECT 2400")
Result(kind=<ResultKind.CONNECT: 'CONNECT'>, speed_bps=2400)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import NamedTuple

CR = b"\r"
COMMAND_BYTES_MAX = 64  # a command line longer than this is refused (ERROR), not buffered
DIAL_DIGITS = re.compile(rb"[0-9*#]")
# Configuration commands a POS sends before dialling; accepted and ignored (OK).
ACCEPTED = frozenset({"L", "M", "Q", "V", "X", "S", "&C", "&D", "&K", "&Q", "&S", "B", "N", "W"})


class ResultKind(enum.Enum):
    OK = "OK"
    CONNECT = "CONNECT"
    BUSY = "BUSY"
    NO_CARRIER = "NO CARRIER"
    NO_ANSWER = "NO ANSWER"
    NO_DIALTONE = "NO DIALTONE"
    ERROR = "ERROR"
    RING = "RING"


class Result(NamedTuple):
    kind: ResultKind
    speed_bps: int | None = None


def result_line(kind: ResultKind, speed_bps: int | None = None) -> bytes:
    """A verbose result code as the modem writes it: CR LF, the text, CR LF."""
    text = kind.value if speed_bps is None else f"{kind.value} {speed_bps}"
    return b"\r\n" + text.encode() + b"\r\n"


def parse_result(line: bytes) -> Result | None:
    """One line the modem wrote (without CR LF) as a result code; ``None``: not one (an echo).

    >>> parse_result(b"NO CARRIER")
    Result(kind=<ResultKind.NO_CARRIER: 'NO CARRIER'>, speed_bps=None)
    >>> parse_result(b"ATDT95566") is None
    True
    """
    text = line.strip().decode("ascii", "replace")
    if text.startswith("CONNECT"):
        rest = text[len("CONNECT") :].strip().split("/")[0]
        return Result(ResultKind.CONNECT, int(rest) if rest.isdigit() else None)
    for kind in ResultKind:
        if text == kind.value:
            return Result(kind)
    return None


@dataclass(frozen=True, slots=True)
class Dial:
    """ATD: call ``number`` (its digits after the last pause ``,``); ``pulse`` for ATDP."""

    number: str
    pulse: bool


@dataclass(frozen=True, slots=True)
class HangUp:
    """ATH (or ATZ / AT&F in a call): the call ends."""


@dataclass(frozen=True, slots=True)
class Online:
    """ATO: back to the call after an escape."""


@dataclass(frozen=True, slots=True)
class Escaped:
    """``+++`` between guard times: command mode, the call still up."""


Event = Dial | HangUp | Online | Escaped


@dataclass(slots=True)
class Step:
    output: bytes = b""  # to write to the terminal (echo, result codes)
    events: list[Event] = field(default_factory=list)


class AnsweringModem:
    """The command state of one modem line: echo (E), the command line being typed, whether
    a call is up. Result codes after a dial are the caller's to write (``result_line``)."""

    def __init__(self) -> None:
        self.echo = True
        self.in_call = False  # a call is up, and the line is in command mode after +++
        self._line = bytearray()

    def reset(self) -> None:
        """ATZ / AT&F: the stored profile (echo on), the command line emptied."""
        self.echo = True
        self._line.clear()

    def feed(self, data: bytes, now: float) -> Step:
        """Bytes typed in command mode (``now`` unused: commands have no timing)."""
        step = Step()
        out = bytearray()
        for byte in data:
            if self.echo:
                out.append(byte)
            if byte in (0x0A,):
                continue
            if byte in (0x08, 0x7F):  # backspace
                if self._line:
                    self._line.pop()
                continue
            if byte != 0x0D:
                if len(self._line) > COMMAND_BYTES_MAX:
                    continue  # refused at CR
                self._line.append(byte)
                continue
            line, self._line = bytes(self._line), bytearray()
            if line.strip() == b"":
                continue
            text, events = self._command(line)
            out += text
            step.events += events
        step.output = bytes(out)
        return step

    def _command(self, line: bytes) -> tuple[bytes, list[Event]]:
        text = line.strip().upper()
        if len(line) > COMMAND_BYTES_MAX or not text.startswith(b"AT"):
            return result_line(ResultKind.ERROR), []
        body = text[2:].decode("ascii", "replace").replace(" ", "")
        events: list[Event] = []
        at = 0
        while at < len(body):
            letter = body[at]
            if letter == "D":
                rest = body[at + 1 :]
                pulse = rest[:1] == "P"
                # digits after the last pause (","): before it, an outside-line prefix
                digits = b"".join(DIAL_DIGITS.findall(rest.split(",")[-1].encode()))
                if not digits:
                    return result_line(ResultKind.ERROR), []
                return b"", [*events, Dial(digits.decode(), pulse)]
            name = body[at : at + 2] if letter == "&" else letter
            at += len(name)
            if name == "S":  # S<n>=<v> or S<n>?
                match = re.match(r"\d+(=\d*|\?)?", body[at:])
                at += match.end() if match else 0
                continue
            number = re.match(r"\d*", body[at:])
            value = number.group() if number else ""
            at += len(value)
            if name in ("Z", "&F"):
                self.reset()
                if self.in_call:
                    self.in_call = False
                    events.append(HangUp())
            elif name == "E":
                self.echo = value != "0"
            elif name == "H":
                if self.in_call:
                    self.in_call = False
                    events.append(HangUp())
            elif name == "O":
                if not self.in_call:
                    return result_line(ResultKind.NO_CARRIER), events
                return b"", [*events, Online()]
            elif name not in ACCEPTED:
                return result_line(ResultKind.ERROR), events
        return result_line(ResultKind.OK), events


class EscapeDetector:
    """``+++`` in a call, with ``guard_s`` of silence before and after it (S12): the bytes
    before it are data; while it waits for the trailing silence the plus signs are held, and
    given back as data if more bytes come in time.

    >>> detector = EscapeDetector(1.0)
    >>> detector.feed(b"ab", 0.0), detector.feed(b"+++", 2.0), detector.expire(3.5)
    (b'ab', b'', True)
    """

    def __init__(self, guard_s: float) -> None:
        self.guard_s = guard_s
        self._last_at = float("-inf")
        self._held = b""
        self._held_since = 0.0

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def deadline(self) -> float | None:
        """When the held plus signs become an escape, if no byte comes before."""
        return self._held_since + self.guard_s if self._held else None

    def feed(self, data: bytes, now: float) -> bytes:
        """Data received at ``now``; returns what is data (held plus signs given back)."""
        quiet_before = now - self._last_at >= self.guard_s
        self._last_at = now
        if self._held:
            candidate = self._held + data
            if candidate in (b"+", b"++", b"+++"):
                self._held = candidate
                return b""
            self._held = b""
            return candidate
        if quiet_before and data in (b"+", b"++", b"+++"):
            self._held, self._held_since = data, now
            return b""
        return data

    def expire(self, now: float) -> bool:
        """True (and the held signs dropped) when ``+++`` was followed by the guard silence."""
        if self._held == b"+++" and now - self._last_at >= self.guard_s:
            self._held = b""
            return True
        return False

    def flush(self) -> bytes:
        """Signs held that will not make an escape (fewer than three): data after all."""
        held, self._held = self._held, b""
        return held

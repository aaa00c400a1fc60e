"""Sans-IO framings of a dial-up line (specs/dialup.md "Framings"), as profiles:

- ``cup``: the CUP-POS frame as on TCP: a 2-byte binary big-endian length, then the message;
- ``stx``: the asynchronous framing older dial POS use: STX · length (2 bytes BCD, the data's
  bytes) · data · ETX · LRC (XOR of every byte after STX through ETX). The receiver answers
  ACK for a good frame and NAK for a bad one (bad length, no ETX, LRC mismatch); the sender
  sends a NAKed frame again, ``RETRANSMISSIONS_MAX`` times at most, then gives up.

>>> encode_stx(b"\\x01\\x02")
b'\\x02\\x00\\x02\\x01\\x02\\x03\\x02'
>>> decoder = LineDecoder(LineFraming.STX)
>>> decoder.feed(b"zz\\x06" + encode_stx(b"hi"))
[Noise(count=2), Ack(), Frame(payload=b'hi')]
>>> decoder.feed(encode_stx(b"hi")[:-1] + b"\\x01")
[BadFrame(reason='LRC mismatch')]
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from messages.framing import FRAME_BYTES_MAX_DEFAULT, FrameDecoder, LengthFormat, encode_frame

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
RETRANSMISSIONS_MAX = 3  # a NAKed frame is sent again at most this many times
STX_DATA_BYTES_MAX = 9999  # four BCD digits


class LineFraming(enum.Enum):
    CUP = "cup"
    STX = "stx"


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that arrived damaged: answer NAK (STX framing only)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Nak:
    pass


@dataclass(frozen=True, slots=True)
class Noise:
    """Bytes outside any frame, dropped."""

    count: int


LineEvent = Frame | BadFrame | Ack | Nak | Noise


def lrc(data: bytes | bytearray) -> int:
    """XOR of ``data``'s bytes.

    >>> hex(lrc(b"\\x00\\x02hi\\x03"))
    '0x0'
    """
    value = 0
    for byte in data:
        value ^= byte
    return value


def encode_stx(payload: bytes) -> bytes:
    size = len(payload)
    if not 0 < size <= STX_DATA_BYTES_MAX:
        raise ValueError(f"an STX frame carries 1 to {STX_DATA_BYTES_MAX} bytes, not {size}")
    body = bytes.fromhex(f"{size:04d}") + payload + bytes([ETX])
    return bytes([STX]) + body + bytes([lrc(body)])


def encode_line(payload: bytes, framing: LineFraming) -> bytes:
    """``payload`` as the line carries it in ``framing``."""
    if framing is LineFraming.CUP:
        return encode_frame(payload, LengthFormat.BINARY2)
    return encode_stx(payload)


class LineDecoder:
    """Bytes of a line in any split; events out in order. For ``cup`` only ``Frame`` events
    (a bad length raises ``FramingError``: the line is dropped, as TCP closes)."""

    def __init__(
        self, framing: LineFraming, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    ) -> None:
        self.framing = framing
        self._frame_bytes_max = min(frame_bytes_max, STX_DATA_BYTES_MAX)
        self._cup = FrameDecoder(LengthFormat.BINARY2, frame_bytes_max)
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        if self.framing is LineFraming.CUP:
            return self._cup.buffered_bytes
        return len(self._buffer)

    def feed(self, data: bytes) -> list[LineEvent]:
        if self.framing is LineFraming.CUP:
            return [Frame(frame) for frame in self._cup.feed(data)]
        self._buffer += data
        events: list[LineEvent] = []
        while self._buffer:
            event, used = self._next(self._buffer)
            if used == 0:
                break
            del self._buffer[:used]
            if event is not None:
                events.append(event)
        return events

    def _next(self, buffer: bytearray) -> tuple[LineEvent | None, int]:
        """The first event in ``buffer`` and the bytes it used (0: more bytes needed)."""
        first = buffer[0]
        if first == ACK:
            return Ack(), 1
        if first == NAK:
            return Nak(), 1
        if first != STX:
            noise = next((i for i, b in enumerate(buffer) if b in (STX, ACK, NAK)), len(buffer))
            return Noise(noise), noise
        if len(buffer) < 3:
            return None, 0
        digits = buffer[1:3].hex()
        if not digits.isdigit() or not 0 < int(digits) <= self._frame_bytes_max:
            return BadFrame("bad length"), self._resync(buffer)
        end = 3 + int(digits) + 2  # data, ETX, LRC
        if len(buffer) < end:
            return None, 0
        if buffer[end - 2] != ETX:
            return BadFrame("no ETX after the data"), self._resync(buffer)
        if lrc(buffer[1 : end - 1]) != buffer[end - 1]:
            return BadFrame("LRC mismatch"), end
        return Frame(bytes(buffer[3 : end - 2])), end

    @staticmethod
    def _resync(buffer: bytearray) -> int:
        """Past this frame's STX to the next one (or the whole buffer)."""
        found = buffer.find(bytes([STX]), 1)
        return found if found > 0 else len(buffer)

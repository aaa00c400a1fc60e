"""Sans-IO framing: length-prefixed frames in, whole frames out.

Feed bytes in any split; whole frames come out in order. Two length formats:

- ``binary2``: 2-byte big-endian binary length (the terminal interface, CUP-POS);
- ``ascii4``: 4 ASCII digits (the bank-host interface's usual header);
- ``none``: no header at all (some bank hosts): a message ends where its own fields end, so
  the decoder is given ``measure`` — the codec's :meth:`~messages.codec.Codec.frame_length`.

>>> decoder = FrameDecoder(LengthFormat.BINARY2)
>>> decoder.feed(b"\\x00\\x03ab")
[]
>>> decoder.feed(b"c\\x00\\x01z")
[b'abc', b'z']
>>> encode_frame(b"hello", LengthFormat.ASCII4)
b'0005hello'
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from messages.errors import CodecError, FramingError

#: Where the first message of a buffer ends (None: not all there yet); raises CodecError.
Measure = Callable[[bytes], "int | None"]

FRAME_BYTES_MAX_DEFAULT = 8192


class LengthFormat(enum.Enum):
    BINARY2 = "binary2"
    ASCII4 = "ascii4"
    NONE = "none"

    @property
    def width(self) -> int:
        return _WIDTHS[self]


_WIDTHS = {LengthFormat.BINARY2: 2, LengthFormat.ASCII4: 4, LengthFormat.NONE: 0}


def encode_frame(payload: bytes, length_format: LengthFormat) -> bytes:
    """Prefix ``payload`` with its length in ``length_format``."""
    size = len(payload)
    if length_format is LengthFormat.NONE:
        return payload
    if length_format is LengthFormat.BINARY2:
        if size > 0xFFFF:
            raise FramingError(f"frame of {size} bytes does not fit a 2-byte length")
        return size.to_bytes(2, "big") + payload
    if size > 9999:
        raise FramingError(f"frame of {size} bytes does not fit a 4-digit length")
    return b"%04d" % size + payload


class FrameDecoder:
    """Accumulates bytes and yields whole frames (without their length prefix).

    A bad length (not digits, zero, above ``frame_bytes_max``) raises :class:`FramingError`;
    the stream cannot be resynchronised after that, so the caller closes the connection.
    """

    __slots__ = (
        "_binary",
        "_buffer",
        "_frame_bytes_max",
        "_length_format",
        "_measure",
        "_offset",
        "_width",
    )

    def __init__(
        self,
        length_format: LengthFormat = LengthFormat.BINARY2,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        measure: Measure | None = None,
    ) -> None:
        if length_format is LengthFormat.NONE and measure is None:
            raise ValueError("frames without a length header need a measure")
        self._measure = measure
        self._length_format = length_format
        self._width = length_format.width  # read once: a frame is fed in every data event
        self._binary = length_format is LengthFormat.BINARY2
        self._frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()
        self._offset = 0  # bytes of the stream consumed before the buffer's start

    @property
    def buffered_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame it completes, in order."""
        buffer = self._buffer
        buffer += data
        if self._measure is not None and self._length_format is LengthFormat.NONE:
            return self._feed_unframed(self._measure)
        frames: list[bytes] = []
        width = self._width
        start = 0
        while len(buffer) - start >= width:
            size = self._frame_size(buffer, start)
            end = start + width + size
            if end > len(buffer):
                break
            frames.append(bytes(buffer[start + width : end]))
            start = end
        if start:
            del buffer[:start]
            self._offset += start
        return frames

    def _feed_unframed(self, measure: Measure) -> list[bytes]:
        buffer = self._buffer
        frames: list[bytes] = []
        while buffer:
            try:
                size = measure(bytes(buffer))
            except CodecError as err:
                raise FramingError(f"no message: {err}", offset=self._offset) from None
            if size is None:
                if len(buffer) > self._frame_bytes_max:
                    raise FramingError(
                        f"message exceeds the maximum of {self._frame_bytes_max} bytes",
                        offset=self._offset,
                    )
                break
            frames.append(bytes(buffer[:size]))
            del buffer[:size]
            self._offset += size
        return frames

    def _frame_size(self, buffer: bytearray, start: int) -> int:
        """The length the header at ``start`` of ``buffer`` gives (checked)."""
        if self._binary:
            size = buffer[start] << 8 | buffer[start + 1]
        else:
            prefix = buffer[start : start + 4]
            if not prefix.isdigit():
                raise FramingError(
                    "length header is not 4 ASCII digits", offset=self._offset + start
                )
            size = int(prefix)
        if size == 0:
            raise FramingError("zero-length frame", offset=self._offset + start)
        if size > self._frame_bytes_max:
            raise FramingError(
                f"frame of {size} bytes exceeds the maximum of {self._frame_bytes_max}",
                offset=self._offset + start,
            )
        return size

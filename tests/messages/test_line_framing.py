"""The dial line's framings and the Hayes dialogue, sans I/O: every split of a stream of frames
(with ACKs, NAKs and noise between them) yields the same events; any damage to an STX frame is a
bad frame, never a different frame; the escape needs its guard times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import hayes
from messages.line_framing import (
    ACK,
    NAK,
    Ack,
    BadFrame,
    Frame,
    LineDecoder,
    LineEvent,
    LineFraming,
    Nak,
    Noise,
    encode_line,
    encode_stx,
)

payloads = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8)
noise = st.binary(max_size=5).map(lambda b: bytes(x for x in b if x not in (2, 6, 0x15)))


def feed_split(decoder: LineDecoder, stream: bytes, cuts: list[int]) -> list[LineEvent]:
    events: list[LineEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += decoder.feed(stream[start:cut])
        start = cut
    return events


@given(payloads=payloads, gaps=st.lists(noise, min_size=8, max_size=8), data=st.data())
def test_stx_every_split_yields_the_same_events(
    payloads: list[bytes], gaps: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(
        gap + bytes([ACK]) + encode_stx(p) for gap, p in zip(gaps, payloads, strict=False)
    )
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    events = feed_split(LineDecoder(LineFraming.STX), stream, cuts)
    assert [e.payload for e in events if isinstance(e, Frame)] == payloads
    assert sum(isinstance(e, Ack) for e in events) == len(payloads)
    assert sum(e.count for e in events if isinstance(e, Noise)) == sum(
        len(g) for g in gaps[: len(payloads)]
    )


@given(payloads=payloads, data=st.data())
def test_cup_every_split_yields_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_line(p, LineFraming.CUP) for p in payloads)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    events = feed_split(LineDecoder(LineFraming.CUP), stream, cuts)
    assert events == [Frame(p) for p in payloads]


@given(payload=st.binary(min_size=1, max_size=200), data=st.data())
def test_a_damaged_stx_frame_is_never_another_frame(payload: bytes, data: st.DataObject) -> None:
    frame = bytearray(encode_stx(payload))
    at = data.draw(st.integers(3, len(frame) - 1))  # a data, ETX or LRC byte
    frame[at] ^= data.draw(st.integers(1, 255))
    events = LineDecoder(LineFraming.STX).feed(bytes(frame) + encode_stx(b"next"))
    frames = [e.payload for e in events if isinstance(e, Frame)]
    assert any(isinstance(e, BadFrame) for e in events)
    assert payload == b"next" or payload not in frames


def test_nak_and_bad_lengths() -> None:
    decoder = LineDecoder(LineFraming.STX)
    assert decoder.feed(bytes([NAK])) == [Nak()]
    assert decoder.feed(b"\x02\x0a\x00xyz") == [BadFrame("bad length")]
    assert decoder.feed(b"\x02\x00\x00") == [BadFrame("bad length")]
    assert decoder.feed(b"\x02\x00\x01a\x04\x00") == [BadFrame("no ETX after the data")]
    with pytest.raises(ValueError, match="1 to 9999"):
        encode_stx(b"")


def test_the_escape_needs_silence_on_both_sides() -> None:
    detector = hayes.EscapeDetector(1.0)
    assert detector.feed(b"data", 0.0) == b"data"
    assert detector.feed(b"+++", 0.5) == b"+++"  # no silence before: data
    assert detector.feed(b"++", 2.0) == b""
    assert detector.feed(b"x", 2.1) == b"++x"  # more bytes before the silence after: data
    assert detector.feed(b"+", 4.0) == b"" and detector.feed(b"++", 4.1) == b""
    assert not detector.expire(4.5)
    assert detector.expire(5.2)


@pytest.mark.parametrize(
    ("typed", "output", "events"),
    [
        (b"ATDT9,95566\r", b"", [hayes.Dial("95566", pulse=False)]),
        (b"atdp 955 66\r", b"", [hayes.Dial("95566", pulse=True)]),
        (b"ATD\r", b"\r\nERROR\r\n", []),
        (b"ATX\x08E0\r", b"\r\nOK\r\n", []),
        (b"AT" + b"M" * 70 + b"\r", b"\r\nERROR\r\n", []),
        (b"HELLO\r", b"\r\nERROR\r\n", []),
        (b"\r\n", b"", []),
    ],
)
def test_commands(typed: bytes, output: bytes, events: list[hayes.Event]) -> None:
    modem = hayes.AnsweringModem()
    modem.echo = False
    step = modem.feed(typed, 0.0)
    assert (step.output, step.events) == (output, events)


def test_result_codes_parse() -> None:
    assert hayes.parse_result(b"CONNECT 2400/ARQ") == hayes.Result(hayes.ResultKind.CONNECT, 2400)
    assert hayes.parse_result(b"CONNECT") == hayes.Result(hayes.ResultKind.CONNECT)
    assert hayes.parse_result(b"BUSY\r") == hayes.Result(hayes.ResultKind.BUSY)
    assert hayes.parse_result(b"") is None

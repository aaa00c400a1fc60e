"""The frame decoder yields the same frames for every split of a stream; bad lengths fail."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import terminal_table
from messages.codec import Codec
from messages.errors import CodecError, FramingError
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL
from tests.support.frames import TERMINAL_CODEC, v8_payload

V8_PAYLOAD = v8_payload()

payloads = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=12)
formats = st.sampled_from([f for f in LengthFormat if f is not LengthFormat.NONE])  # headed


@given(payloads=payloads, length_format=formats, data=st.data())
def test_every_split_yields_the_same_frames(
    payloads: list[bytes], length_format: LengthFormat, data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(p, length_format) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = FrameDecoder(length_format)
    frames: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames += decoder.feed(stream[start:cut])
        start = cut
    assert frames == payloads
    assert decoder.buffered_bytes == 0


@given(payloads=payloads, length_format=formats)
def test_one_byte_at_a_time(payloads: list[bytes], length_format: LengthFormat) -> None:
    stream = b"".join(encode_frame(p, length_format) for p in payloads)
    decoder = FrameDecoder(length_format)
    frames = [f for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])]
    assert frames == payloads


def test_frame_above_the_maximum_is_refused_with_its_offset() -> None:
    decoder = FrameDecoder(LengthFormat.BINARY2, frame_bytes_max=100)
    assert decoder.feed(encode_frame(b"x" * 10, LengthFormat.BINARY2)) == [b"x" * 10]
    with pytest.raises(FramingError) as caught:
        decoder.feed(b"\x00\x65")
    assert caught.value.offset == 12


@pytest.mark.parametrize("prefix", [b"00a5", b"-001", b"0000"])
def test_bad_ascii_length_is_refused(prefix: bytes) -> None:
    with pytest.raises(FramingError):
        FrameDecoder(LengthFormat.ASCII4).feed(prefix + b"abcdef")


def test_zero_binary_length_is_refused() -> None:
    with pytest.raises(FramingError):
        FrameDecoder(LengthFormat.BINARY2).feed(b"\x00\x00")


def test_encode_frame_refuses_what_the_length_cannot_hold() -> None:
    with pytest.raises(FramingError):
        encode_frame(bytes(10_000), LengthFormat.ASCII4)


@pytest.mark.parametrize("codec", [Codec(TERMINAL), Codec(BANK)], ids=["terminal", "bank"])
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_codec_errors(codec: Codec, data: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(data)


@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(V8_PAYLOAD) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    cut=st.integers(0, len(V8_PAYLOAD)),
)
def test_corrupted_frames_raise_only_codec_errors(edits: list[tuple[int, int]], cut: int) -> None:
    payload = bytearray(V8_PAYLOAD)
    for index, value in edits:
        payload[index] = value
    with contextlib.suppress(CodecError):
        terminal_table.parse(TERMINAL_CODEC.decode(bytes(payload[:cut])))


def test_without_a_header_a_message_ends_where_its_fields_end() -> None:
    """``none``: the codec measures each message; any split gives the same messages."""
    from messages.codec import Codec, Message
    from messages.spec_bank import BANK

    codec = Codec(BANK)
    first = codec.encode(Message("0800", {7: "1207150000", 11: "000001", 32: "0102", 70: "001"}))
    second = codec.encode(Message("0810", {7: "1207150000", 11: "000001", 32: "0102", 39: "00"}))
    stream = first + second
    for cut in range(1, len(stream)):
        decoder = FrameDecoder(LengthFormat.NONE, measure=codec.frame_length)
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == [first, second]
    with pytest.raises(FramingError):
        FrameDecoder(LengthFormat.NONE, measure=codec.frame_length).feed(
            b"0800@" + bytes(7) + b"xx"
        )

"""Known-answer tests of the terminal and bank codecs (reference §2.6 frame V8)."""

from __future__ import annotations

import pytest

from hsm.des import Des
from hsm.mac import cup_ecb
from messages.codec import Codec, Message
from messages.errors import CodecError, UnknownTransaction
from messages.pretty import pretty
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL
from messages.terminal_table import row_of
from tests.support.frames import TERMINAL_CODEC, V8_FRAME, v8_payload

V8_MAK = bytes.fromhex("0723C80DB5F4CD3D0723C80DB5F4CD3D")

BANK_CODEC = Codec(BANK)


def test_v8_frame_is_129_bytes_with_its_length_prefix() -> None:
    assert len(V8_FRAME) == 129
    assert V8_FRAME[:2] == b"\x00\x7f"


def test_v8_decodes_field_by_field() -> None:
    message = TERMINAL_CODEC.decode(v8_payload())
    assert message.tpdu == bytes.fromhex("6000030000")
    assert message.header == bytes.fromhex("603210320072")
    assert message.mti == "0200"
    assert message.fields == {
        3: "000000",
        4: "000000001234",
        11: "000002",
        22: "030",
        25: "99",
        41: "00000001",
        42: "952718182217875",
        49: "156",
        60: "2600000100060000000",
        62: bytes.fromhex(
            "5F01123238343431323334353637383930313233345F03063136303033365F04063230303832365C023031"
        ),
        64: b"B3A092AE",
    }


def test_v8_reencodes_to_the_same_bytes() -> None:
    payload = v8_payload()
    assert TERMINAL_CODEC.encode(TERMINAL_CODEC.decode(payload)) == payload


def test_v8_mac_block_gives_the_frames_mac() -> None:
    payload = v8_payload()
    block = TERMINAL_CODEC.mac_block(payload)
    assert block[:2] == b"\x02\x00"  # starts at the MTI
    assert len(block) == len(payload) - 11 - 8
    assert cup_ecb(Des(V8_MAK), block) == b"B3A092AE"


def test_with_mac_replaces_the_trailing_field() -> None:
    payload = v8_payload()
    zeroed = TERMINAL_CODEC.with_mac(payload, bytes(8))
    assert TERMINAL_CODEC.decode(zeroed).fields[64] == bytes(8)
    assert TERMINAL_CODEC.with_mac(zeroed, b"B3A092AE") == payload


def test_v8_is_not_a_transaction_of_our_table() -> None:
    # 60.1 = 26 is no medswitch transaction: decodable, but parse refuses it with code 30.
    with pytest.raises(UnknownTransaction):
        row_of(TERMINAL_CODEC.decode(v8_payload()))


def test_decode_never_mutates_or_keeps_a_reference_to_input() -> None:
    payload = bytearray(v8_payload())
    message = TERMINAL_CODEC.decode(bytes(payload))
    before = dict(message.fields)
    TERMINAL_CODEC.encode(message)
    assert dict(message.fields) == before


@pytest.mark.parametrize(
    ("cut", "field"),
    [(12, "MTI"), (16, "bitmap"), (30, "11"), (50, "42")],
)
def test_truncated_frame_names_field_and_offset(cut: int, field: str) -> None:
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.decode(v8_payload()[:cut])
    assert caught.value.field == field
    assert caught.value.offset is not None and 0 <= caught.value.offset <= cut


def test_non_digit_in_numeric_field_is_a_format_error_without_data() -> None:
    payload = bytearray(v8_payload())
    payload[11 + 2 + 8] = 0x1A  # F3's first byte: not BCD
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.decode(bytes(payload))
    assert caught.value.field == "3"
    assert "1A" not in str(caught.value).upper().replace("FIELD", "")


def test_a_fault_names_its_byte_offset_in_the_whole_payload() -> None:
    payload = bytearray(v8_payload())
    payload[11 + 2 + 8] = 0x1A  # F3, after the TPDU and header, MTI and bitmap
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.decode(bytes(payload))
    assert (caught.value.field, caught.value.offset) == ("3", 21)


def test_a_payload_shorter_than_tpdu_and_header_is_a_header_fault() -> None:
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.decode(v8_payload()[:7])
    assert (caught.value.field, caught.value.offset) == ("header", 0)
    assert caught.value.reason == "Field data is 7 bytes, expecting 11"
    assert caught.value.envelope == {}


def test_tpdu_and_header_must_fill_their_11_bytes() -> None:
    message = Message("0800", {11: "000001"}, tpdu=bytes(5), header=bytes(5))
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.encode(message)
    assert caught.value.field == "header"
    assert caught.value.reason == "Field data is 10 bytes, expecting 11"


def test_secondary_bitmap_is_refused_on_the_terminal_interface() -> None:
    payload = bytearray(v8_payload())
    payload[13] |= 0x80
    with pytest.raises(CodecError):
        TERMINAL_CODEC.decode(bytes(payload))


def test_a_secondary_bitmaps_error_echoes_the_envelope_only_from_a_reading_that_fits() -> None:
    """Bit 1 set on the terminal interface: the envelope comes from whichever reading (8 bytes
    of secondary bitmap, or none) decodes the whole frame — never from shifted offsets."""
    envelope = {11: "123456", 41: "POS00001", 42: "101320000000001", 60: "00000001301"}
    plain = TERMINAL_CODEC.encode(Message("0820", envelope, bytes(5), bytes(6)))
    bit_only = bytearray(plain)
    bit_only[13] |= 0x80
    with_secondary = bytearray(bit_only)
    with_secondary[21:21] = bytes(8)
    naming_field_65 = bytearray(with_secondary)
    naming_field_65[21] = 0x80
    for frame, expected in (
        (bit_only, envelope),
        (with_secondary, envelope),
        (naming_field_65, {}),  # neither reading fits
    ):
        with pytest.raises(CodecError) as caught:
            TERMINAL_CODEC.decode(bytes(frame))
        assert caught.value.field == "bitmap" and caught.value.offset == 13
        assert dict(caught.value.envelope) == expected


def test_card_data_never_appears_in_errors() -> None:
    pan = "6225880123456789"
    message = Message("0200", {2: pan, 3: "00000X"}, tpdu=bytes(5), header=bytes(6))
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.encode(message)
    assert pan not in str(caught.value)


def test_bank_codec_round_trip_with_secondary_bitmap_and_mac() -> None:
    message = Message(
        "0200",
        {
            2: "6225880123456789",
            3: "401000",
            4: "000000010000",
            7: "1125103000",
            11: "000123",
            32: "01020000",
            52: bytes(range(8)),
            102: "6222021234567890",
            128: bytes(8),
        },
    )
    payload = BANK_CODEC.encode(message)
    assert payload[:4] == b"0200"
    assert payload[4] & 0x80  # secondary bitmap present
    assert BANK_CODEC.decode(payload) == message
    assert BANK_CODEC.mac_block(payload) == payload[:-8]


def test_pretty_masks_pan_and_wipes_secrets() -> None:
    message = Message(
        "0200",
        {2: "6225880123456789", 35: "6225880123456789D2912", 52: bytes(8), 55: b"\x9f\x26"},
        tpdu=bytes(5),
        header=bytes(6),
    )
    text = pretty(message, TERMINAL)
    assert "622588******6789" in text
    assert "6225880123456789" not in text
    assert "D2912" not in text
    assert "[wiped, 8 bytes]" in text


def test_a_fault_carries_the_envelope_read_before_it_and_no_card_data() -> None:
    message = Message(
        "0200",
        {
            2: "6225880123456789",
            3: "000000",
            11: "000777",
            41: "POS00001",
            42: "101320000000001",
            60: "22000001000",
        },
        tpdu=bytes(5),
        header=bytes(6),
    )
    payload = TERMINAL_CODEC.encode(message)
    with pytest.raises(CodecError) as caught:
        TERMINAL_CODEC.decode(payload[:-3])  # field 60 cut short
    assert caught.value.envelope == {
        3: "000000",
        11: "000777",
        41: "POS00001",
        42: "101320000000001",
    }
    assert "6225880123456789" not in repr(caught.value.__dict__.get("reason"))

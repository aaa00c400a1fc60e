"""Primitives against published vectors and against psec on random keys and data."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm import mac, pboc, pinblock, signon
from hsm.des import Des, adjust_parity, has_odd_parity, kcv
from hsm.errors import InvalidInputError, KcvMismatchError, PinBlockError
from hsm.padding import pad_method_1, pad_method_2, unpad_method_2
from tests.support import psec_oracle as oracle

keys8 = st.binary(min_size=8, max_size=8)
keys16 = st.binary(min_size=16, max_size=16)
keys = st.one_of(keys8, keys16, st.binary(min_size=24, max_size=24))
data = st.binary(min_size=1, max_size=200)
pans = st.from_regex(r"\A[0-9]{13,19}\Z")
pins = st.from_regex(r"\A[0-9]{4,12}\Z")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# V1, V2, V4 session keys and MACs directly on the primitives (the HSM tests repeat them
# through the interface).
SESSION_VECTORS = [
    ("V1 load", "11223344556677888877665544332211", "11223344", 0, None, "9B1D924E05595603"),
    ("V2 purchase", "11223344556677888877665544332211", "11223344", 0, 1, "003238ABC57659DD"),
    ("V4 load", "00112233445566778899AABBCCDDEEFF", "C903814D", 0, None, "11FDF264E8AEEFA3"),
    ("V4 purchase", "00112233445566778899AABBCCDDEEFF", "584633C9", 0, 0, "C08346DF9F1D457A"),
]


@pytest.mark.parametrize(("name", "key", "rnd", "ctr", "serial", "expected"), SESSION_VECTORS)
def test_session_keys(
    name: str, key: str, rnd: str, ctr: int, serial: int | None, expected: str
) -> None:
    card = Des(h(key))
    if serial is None:
        got = pboc.online_session_key(card, h(rnd), ctr)
    else:
        got = pboc.offline_session_key(card, h(rnd), ctr, serial)
    assert got.hex().upper() == expected


def test_v1_macs() -> None:
    sk = Des(h("9B1D924E05595603"))
    assert mac.pboc_mac(sk, pboc.load_mac1_data(0, 0x1000, 1, h("001122334455"))) == h("2988AE5A")
    mac2 = pboc.load_mac2_data(0x1000, 1, h("001122334455"), datetime(2011, 12, 21, 21, 48, 22))
    assert mac.pboc_mac(sk, mac2) == h("3A845BF0")


def test_v5_diversification() -> None:
    got = pboc.diversify(Des(h("00112233445566778899AABBCCDDEEFF")), h("1122334455667788"))
    assert got == h("496BD7A351364453 3100B54E71196528")


def test_v7_field62_round_trip() -> None:
    tmk = Des(h("CA5D92598DCA48CE8A4C76361A9269E9"))
    f62 = h("6701EAD6A9AD51E51AA406E2C27FCFA9 8D0A74B8 B651F9E9BACE9AE1 0000000000000000 AB7153CA")
    keys = signon.parse_field62(tmk, f62)
    assert keys.pik == h("807A23AD32B36D457AE91FDF927570EA")
    assert keys.mak == h("5BB5C72CD00B7338")
    assert signon.build_field62(tmk, keys) == f62
    assert "807A" not in repr(keys)
    tampered = f62[:-1] + bytes([f62[-1] ^ 1])
    with pytest.raises(KcvMismatchError):
        signon.parse_field62(tmk, tampered)


V8_FRAME = h(
    "007F600003000060321032007202003020048000C08015000000000000001234000002030099303030303030"
    "303139353237313831383232313738373531353600192600000100060000000000435F011232383434313233"
    "34353637383930313233345F03063136303033365F04063230303832365C0230314233413039324145"
)


def test_v8_cup_ecb() -> None:
    mab = V8_FRAME[2 + 5 + 6 : -8]
    assert V8_FRAME[-8:] == b"B3A092AE"
    assert mac.cup_ecb(Des(h("0723C80DB5F4CD3D0723C80DB5F4CD3D")), mab) == b"B3A092AE"


@given(st.binary(max_size=1200))
def test_xor_blocks_is_the_xor_of_the_zero_padded_blocks(data: bytes) -> None:
    padded = data + bytes(-len(data) % 8)
    expected = 0
    for start in range(0, len(padded), 8):
        expected ^= int.from_bytes(padded[start : start + 8], "big")
    assert mac.xor_blocks(data) == expected


def test_xor_blocks_on_either_side_of_the_kept_masks() -> None:
    for blocks in (63, 64, 65, 66, 128, 129, 130, 257):
        data = bytes(range(256)) * (blocks * 8 // 256 + 1)
        data = data[: blocks * 8 - 3]
        padded = data + bytes(3)
        expected = 0
        for start in range(0, len(padded), 8):
            expected ^= int.from_bytes(padded[start : start + 8], "big")
        assert mac.xor_blocks(data) == expected


def test_v10_pin_block() -> None:
    assert pinblock.encode_format0("1234", "5544332211009966") == h("041277CDDEEFF669")


def test_kcv_reference_value_and_parity() -> None:
    assert kcv(h("0123456789ABCDEFFEDCBA9876543210")) == "08D7B4"
    formed = adjust_parity(h("1133557799BBDDFFDDFF99BB55771133"))
    assert has_odd_parity(formed) and kcv(formed) == "2284A8"


@given(keys)
def test_kcv_matches_psec(key: bytes) -> None:
    assert kcv(key) == oracle.kcv(key)


@given(keys8, data, st.sampled_from([1, 2]))
def test_alg1_single_des_matches_psec(key: bytes, message: bytes, padding: int) -> None:
    assert mac.iso9797_alg1(Des(key), message, padding=padding) == oracle.cbc_mac(
        key, message, padding
    )


@given(keys16, data, st.sampled_from([1, 2]))
def test_alg1_tdes_matches_psec(key: bytes, message: bytes, padding: int) -> None:
    assert mac.iso9797_alg1(Des(key), message, padding=padding) == oracle.cbc_mac(
        key, message, padding
    )


@given(keys16, data, st.sampled_from([1, 2]))
def test_alg3_matches_psec(key: bytes, message: bytes, padding: int) -> None:
    got = mac.iso9797_alg3(Des(key[:8]), Des(key), message, padding=padding)
    assert got == oracle.retail_mac(key, message, padding)


@given(keys8, data)
def test_pboc_mac_is_alg1_pad2_truncated(key: bytes, message: bytes) -> None:
    assert mac.pboc_mac(Des(key), message) == oracle.cbc_mac(key, message, 2)[:4]


@given(keys8, data, data)
def test_reused_context_gives_independent_macs(key: bytes, first: bytes, second: bytes) -> None:
    shared = Des(key)
    mac.iso9797_alg1(shared, first)
    assert mac.iso9797_alg1(shared, second) == mac.iso9797_alg1(Des(key), second)


@given(st.datetimes(min_value=datetime(1000, 1, 1)))
def test_bcd_datetime_is_the_digits_of_the_date(when: datetime) -> None:
    assert pboc.bcd_datetime(when).hex() == when.strftime("%Y%m%d%H%M%S").zfill(14)


@given(
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from(sorted(pboc.PURCHASE_TYPES)),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 0xFFFFFFFF),
    st.datetimes(min_value=datetime(1000, 1, 1)),
)
def test_purchase_tac_data_layout(
    amount: int, txn_type: int, terminal: bytes, serial: int, when: datetime
) -> None:
    """amount(4) type(1) terminal(6) serial(4) BCD date and time(7), as reference §1.4."""
    expected = (
        amount.to_bytes(4, "big") + bytes([txn_type]) + terminal + serial.to_bytes(4, "big")
        + bytes.fromhex(when.strftime("%Y%m%d%H%M%S").zfill(14))
    )  # fmt: skip
    assert pboc.purchase_tac_data(amount, txn_type, terminal, serial, when) == expected


def test_purchase_tac_data_refuses_what_does_not_fit() -> None:
    when = datetime(2026, 11, 25, 10, 0)
    for amount, txn_type, terminal, serial in (
        (-1, 6, bytes(6), 0),
        (1 << 32, 6, bytes(6), 0),
        (1, 6, bytes(6), 1 << 32),
        (1, 256, bytes(6), 0),
        (1, 6, bytes(5), 0),
        (1, 6, bytes(7), 0),
    ):
        with pytest.raises(InvalidInputError):
            pboc.purchase_tac_data(amount, txn_type, terminal, serial, when)


@given(pins, pans)
def test_pin_block_matches_psec(pin: str, pan: str) -> None:
    block = pinblock.encode_format0(pin, pan)
    assert block == oracle.pinblock0(pin, pan)
    assert pinblock.decode_format0(block, pan) == pin == oracle.pin_from_block0(block, pan)


@given(keys16, st.binary(min_size=8, max_size=8))
def test_diversify_matches_psec_ecb(key: bytes, factor: bytes) -> None:
    inverted = bytes(b ^ 0xFF for b in factor)
    expected = oracle.tdes_ecb_encrypt(key, factor + inverted)
    assert pboc.diversify(Des(key), factor) == expected


@given(st.binary(max_size=40))
def test_padding(message: bytes) -> None:
    assert len(pad_method_1(message)) % 8 == 0
    assert unpad_method_2(pad_method_2(message)) == message


@given(keys16, st.binary(max_size=60))
def test_secure_messaging_round_trip(key: bytes, plain: bytes) -> None:
    k = Des(key)
    assert pboc.secure_decrypt(k, pboc.secure_encrypt(k, plain)) == plain


def test_bad_inputs_raise() -> None:
    with pytest.raises(InvalidInputError):
        Des(bytes(7))
    with pytest.raises(PinBlockError):
        pinblock.decode_format0(bytes(8), "5544332211009966")
    with pytest.raises(InvalidInputError):
        pinblock.encode_format0("12", "5544332211009966")


def cup_ecb_reference(key: bytes, mab: bytes) -> bytes:
    """The CUP-ECB steps of reference §2.6 written out over psec's DES."""
    if len(mab) % 8:
        mab += bytes(8 - len(mab) % 8)
    acc = bytes(8)
    for i in range(0, len(mab), 8):
        acc = bytes(a ^ b for a, b in zip(acc, mab[i : i + 8], strict=True))
    hexed = acc.hex().upper().encode()
    e1 = oracle.tdes_ecb_encrypt(key, hexed[:8])
    e2 = oracle.tdes_ecb_encrypt(key, bytes(a ^ b for a, b in zip(e1, hexed[8:], strict=True)))
    return e2[:4].hex().upper().encode()


@given(st.one_of(keys8, keys16), st.binary(max_size=300))
def test_cup_ecb_matches_reference_over_psec(key: bytes, mab: bytes) -> None:
    assert mac.cup_ecb(Des(key), mab) == cup_ecb_reference(key, mab)


@given(st.one_of(keys8, keys16), st.binary(min_size=4, max_size=4), data)
def test_line_protection_mac_matches_psec(key: bytes, challenge: bytes, command: bytes) -> None:
    # CBC under IV x equals CBC under a zero IV with x folded into the first block.
    padded = pad_method_2(command)
    iv = challenge + bytes(4)
    folded = bytes(a ^ b for a, b in zip(padded[:8], iv, strict=True)) + padded[8:]
    if len(key) == 8:
        expected = oracle.cbc_mac(key, folded, 1)[:4]
        got = mac.line_protection_mac(Des(key), None, challenge, command)
    else:
        expected = oracle.retail_mac(key, folded, 1)[:4]
        got = mac.line_protection_mac(Des(key[:8]), Des(key), challenge, command)
    assert got == expected

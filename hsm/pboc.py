"""PBOC ED/EP cryptography: key diversification, session keys and the exact inputs of MAC1,
MAC2, MAC3 and TAC (reference pboc-and-cup-pos.md §1.2–1.4). Times are passed in.

>>> mk = Des(bytes.fromhex("00112233445566778899AABBCCDDEEFF"))
>>> diversify(mk, bytes.fromhex("1122334455667788")).hex().upper()  # V5
'496BD7A3513644533100B54E71196528'
>>> load = Des(bytes.fromhex("11223344556677888877665544332211"))
>>> online_session_key(load, bytes.fromhex("11223344"), 0).hex().upper()  # V1
'9B1D924E05595603'
"""

from __future__ import annotations

import struct
from datetime import datetime

from hsm.des import Des, xor
from hsm.errors import InvalidInputError
from hsm.padding import pad_method_2

# Transaction type identifiers (§1.3).
TYPE_ED_LOAD = 0x01
TYPE_EP_LOAD = 0x02
TYPE_ED_UNLOAD = 0x03
TYPE_ED_WITHDRAW = 0x04
TYPE_ED_PURCHASE = 0x05
TYPE_EP_PURCHASE = 0x06
TYPE_CAPP_PURCHASE = 0x09
LOAD_TYPES = frozenset({TYPE_ED_LOAD, TYPE_EP_LOAD})
PURCHASE_TYPES = frozenset(
    {TYPE_ED_WITHDRAW, TYPE_ED_PURCHASE, TYPE_EP_PURCHASE, TYPE_CAPP_PURCHASE}
)


def diversify(master: Des, factor: bytes) -> bytes:
    """One level: 3DES(MK, F) || 3DES(MK, ~F); the factor is 8 bytes."""
    if len(factor) != 8:
        raise InvalidInputError("a diversification factor is 8 bytes")
    inverted = xor(factor, b"\xff" * 8)
    return master.encrypt_ecb(factor + inverted)


def card_factor(application_serial: bytes) -> bytes:
    """The factor from the application serial: its last 8 bytes (of 8 or 10)."""
    if len(application_serial) not in (8, 10):
        raise InvalidInputError("application serial must be 8 or 10 bytes")
    return application_serial[-8:]


def online_session_key(card_key: Des, rnd: bytes, online_ctr: int) -> bytes:
    """Load/unload/overdraft session key: 3DES(card key, rnd || ctr || 8000), used as DES."""
    return card_key.encrypt_ecb(_rnd(rnd) + _u16(online_ctr) + b"\x80\x00")


def offline_session_key(card_key: Des, rnd: bytes, offline_ctr: int, term_serial: int) -> bytes:
    """Purchase session key: 3DES(card key, rnd || ctr || rightmost 2 bytes of term serial)."""
    return card_key.encrypt_ecb(_rnd(rnd) + _u16(offline_ctr) + _u32(term_serial)[2:])


def tac_key(dtk: bytes) -> bytes:
    """The TAC key: DTK left half XOR right half (single DES)."""
    if len(dtk) != 16:
        raise InvalidInputError("DTK must be 16 bytes")
    return xor(dtk[:8], dtk[8:])


_BCD = bytes((n // 10) << 4 | n % 10 for n in range(100))  # 0..99 → one BCD byte
_TAC_HEAD = struct.Struct(">IB6sI")  # amount, type, terminal, serial


def bcd_datetime(when: datetime) -> bytes:
    """yyyymmdd hhmmss as 7 BCD bytes (arithmetic: strftime costs a TAC's worth).

    >>> bcd_datetime(datetime(2026, 11, 25, 9, 5, 7)).hex()
    '20261125090507'
    """
    year = when.year
    return bytes(
        (
            _BCD[year // 100],
            _BCD[year % 100],
            _BCD[when.month],
            _BCD[when.day],
            _BCD[when.hour],
            _BCD[when.minute],
            _BCD[when.second],
        )
    )


def load_mac1_data(old_balance: int, amount: int, txn_type: int, terminal_id: bytes) -> bytes:
    return _u32(old_balance) + _u32(amount) + bytes([txn_type]) + _term(terminal_id)


def load_mac2_data(amount: int, txn_type: int, terminal_id: bytes, host_time: datetime) -> bytes:
    return _u32(amount) + bytes([txn_type]) + _term(terminal_id) + bcd_datetime(host_time)


def online_result_data(
    new_balance: int,
    online_ctr: int,
    amount: int,
    txn_type: int,
    terminal_id: bytes,
    when: datetime,
) -> bytes:
    """Input of a load TAC and of an unload MAC3 (the counter as before the increment)."""
    return (
        _u32(new_balance)
        + _u16(online_ctr)
        + _u32(amount)
        + bytes([txn_type])
        + _term(terminal_id)
        + bcd_datetime(when)
    )


def purchase_mac1_data(amount: int, txn_type: int, terminal_id: bytes, when: datetime) -> bytes:
    return _u32(amount) + bytes([txn_type]) + _term(terminal_id) + bcd_datetime(when)


def purchase_tac_data(
    amount: int, txn_type: int, terminal_id: bytes, term_serial: int, when: datetime
) -> bytes:
    """amount(4) type(1) terminal(6) serial(4) yyyymmddhhmmss(7), packed at once (a batch
    upload verifies thousands).

    >>> purchase_tac_data(1, 6, bytes(6), 2, datetime(2026, 1, 2, 3, 4, 5)).hex()
    '00000001060000000000000000000220260102030405'
    """
    if len(terminal_id) != 6:
        raise InvalidInputError("terminal id is 6 bytes")
    if not (0 <= amount <= 0xFFFFFFFF and 0 <= term_serial <= 0xFFFFFFFF):
        raise InvalidInputError("amount or serial out of range")
    if not 0 <= txn_type <= 0xFF:
        raise InvalidInputError("transaction type out of range")
    return _TAC_HEAD.pack(amount, txn_type, terminal_id, term_serial) + bcd_datetime(when)


def amount_data(amount: int) -> bytes:
    """Input of the purchase MAC2: the amount alone."""
    return _u32(amount)


def secure_encrypt(key: Des, plain: bytes) -> bytes:
    """Line encryption (§1.2): LD || data, pad 80.. only when unaligned, 3DES-ECB."""
    if len(plain) > 255:
        raise InvalidInputError("secure-messaging data longer than 255 bytes")
    data = bytes([len(plain)]) + plain
    if len(data) % 8:
        data = pad_method_2(data)
    return key.encrypt_ecb(data)


def secure_decrypt(key: Des, cipher: bytes) -> bytes:
    data = key.decrypt_ecb(cipher)
    length = data[0]
    if length > len(data) - 1:
        raise InvalidInputError("secure-messaging length byte out of range")
    return data[1 : 1 + length]


def _u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise InvalidInputError("counter out of range")
    return value.to_bytes(2, "big")


def _u32(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidInputError("amount or serial out of range")
    return value.to_bytes(4, "big")


def _rnd(rnd: bytes) -> bytes:
    if len(rnd) != 4:
        raise InvalidInputError("card random is 4 bytes")
    return rnd


def _term(terminal_id: bytes) -> bytes:
    if len(terminal_id) != 6:
        raise InvalidInputError("terminal id is 6 bytes")
    return terminal_id

"""PBOC card operations on clear card keys (inside hsm/ only): MAC1/MAC2/MAC3/TAC, the PIN
reload and unblock cryptograms, line-protected scripts and secure key writing.

Card keys here are already diversified (16 bytes); session and TAC keys come in as `Des`
objects so the caller can keep them for the MAC1 → MAC2 pair. `hsm.soft` looks keys up,
enforces usage and calls these.

>>> dlk = Des(bytes.fromhex("00112233445566778899AABBCCDDEEFF"))  # V4
>>> txn = OnlineTxn(2, 0, 0x2000, 0, bytes.fromhex("C903814D"), bytes.fromhex("001122334455"),
...                 bytes.fromhex("03976C22"))
>>> session = online_session(dlk, txn)
>>> verify_mac1(session, txn)
True
>>> mac2(session, txn, datetime(2016, 12, 16, 10, 58)).hex().upper()
'8AFA5718'
"""

from __future__ import annotations

import hmac
from datetime import datetime

from hsm import mac, pboc
from hsm.des import Des
from hsm.errors import InvalidInputError
from hsm.interface import OnlineTxn, PurchaseRecord

# app block/unblock, card block, updates, APPEND RECORD (the record book)
SCRIPT_INS = frozenset({0x1E, 0x18, 0x16, 0xD6, 0xDC, 0xE2})
SCRIPT_CLA = frozenset({0x04, 0x14, 0x84, 0x94})  # x4 line-protected; bit 10: chained


def online_session(card_key: Des, txn: OnlineTxn) -> Des:
    return Des(pboc.online_session_key(card_key, txn.rnd, txn.online_ctr))


def purchase_session(card_key: Des, rec: PurchaseRecord, rnd: bytes, ctr: int) -> Des:
    return Des(pboc.offline_session_key(card_key, rnd, ctr, rec.term_serial))


def _equal(a: bytes, b: bytes) -> bool:
    if len(b) != 4:
        raise InvalidInputError("a PBOC MAC or TAC is 4 bytes")
    return hmac.compare_digest(a, b)


def verify_mac1(session: Des, txn: OnlineTxn) -> bool:
    data = pboc.load_mac1_data(txn.old_balance_fen, txn.amount_fen, txn.txn_type, txn.terminal_id)
    return _equal(mac.pboc_mac(session, data), txn.mac1)


def mac2(session: Des, txn: OnlineTxn, host_time: datetime) -> bytes:
    data = pboc.load_mac2_data(txn.amount_fen, txn.txn_type, txn.terminal_id, host_time)
    return mac.pboc_mac(session, data)


def online_result(txn: OnlineTxn, new_balance: int, when: datetime) -> bytes:
    return pboc.online_result_data(
        new_balance, txn.online_ctr, txn.amount_fen, txn.txn_type, txn.terminal_id, when
    )


def verify_mac3(
    session: Des, txn: OnlineTxn, new_balance: int, when: datetime, m: bytes
) -> bool:
    return _equal(mac.pboc_mac(session, online_result(txn, new_balance, when)), m)


def verify_load_tac(
    tac_key: Des, txn: OnlineTxn, new_balance: int, when: datetime, t: bytes
) -> bool:
    return _equal(mac.pboc_mac(tac_key, online_result(txn, new_balance, when)), t)


def purchase_mac1(session: Des, rec: PurchaseRecord) -> bytes:
    data = pboc.purchase_mac1_data(rec.amount_fen, rec.txn_type, rec.terminal_id, rec.when)
    return mac.pboc_mac(session, data)


def verify_purchase_mac2(session: Des, rec: PurchaseRecord, m: bytes) -> bool:
    return _equal(mac.pboc_mac(session, pboc.amount_data(rec.amount_fen)), m)


def verify_purchase_tac(tac_key: Des, rec: PurchaseRecord, t: bytes) -> bool:
    data = pboc.purchase_tac_data(
        rec.amount_fen, rec.txn_type, rec.terminal_id, rec.term_serial, rec.when
    )
    return _equal(mac.pboc_mac(tac_key, data), t)


def pin_bcd(pin: str) -> bytes:
    """A PIN as the card takes it: BCD, padded with F when the digits are odd."""
    return bytes.fromhex(pin + "F" * (len(pin) % 2))


def pin_reload_mac(drpk: bytes, pin: str) -> bytes:
    return mac.pboc_mac(Des(pboc.tac_key(drpk)), pin_bcd(pin))


def line_mac(key: bytes, challenge: bytes, command: bytes, sequence: int = 0) -> bytes:
    """IV = challenge ‖ sequence (4 bytes big-endian): command `sequence` of a chained script
    (specs/card-layout.md "Multi-command scripts"); 0 for a single command."""
    if len(key) == 8:
        return mac.line_protection_mac(Des(key), None, challenge, command, sequence)
    return mac.line_protection_mac(Des(key[:8]), Des(key), challenge, command, sequence)


def script_mac(damk: bytes, challenge: bytes, command: bytes, sequence: int = 0) -> bytes:
    """CLA `04`, or `14` (chained: more of the script follows), then INS P1 P2 Lc data."""
    if len(command) < 5 or command[0] not in SCRIPT_CLA or command[1] not in SCRIPT_INS:
        raise InvalidInputError("not a line-protected maintenance command")
    if command[4] != len(command) - 5 + 4:
        raise InvalidInputError("Lc must count the data and the 4-byte MAC")
    return line_mac(damk, challenge, command, sequence)


def protected_apdu(key: bytes, challenge: bytes, header: bytes, plain: bytes) -> bytes:
    """header(4) Lc enc(plain) MAC, encrypted and MACed under `key` (secure messaging)."""
    if len(header) != 4 or header[0] & 0x0F != 0x04:
        raise InvalidInputError("header is CLA INS P1 P2 with a secure-messaging CLA (x4)")
    enc = pboc.secure_encrypt(Des(key), plain)
    body = header + bytes([len(enc) + 4]) + enc
    return body + line_mac(key, challenge, body)


def pin_unblock_command(dpuk: bytes, challenge: bytes, key_index: int, pin: str) -> bytes:
    header = bytes([0x84, 0x24, key_index & 0xFF, 0x00])
    return protected_apdu(dpuk, challenge, header, pin_bcd(pin))


def data_check_code(key: bytes, data: bytes) -> bytes:
    if len(key) != 16:
        raise InvalidInputError("the data-check key is 16 bytes")
    return mac.iso9797_alg3(Des(key[:8]), Des(key), data, padding=2)[:4]

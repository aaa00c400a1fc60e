"""VirtualPsam: the secure access module a POS holds for offline purchases (reference §1.5).

It knows its terminal number (EF 0016, 6 bytes, the `term_id` cards MAC), its transaction
serial, and the purchase master keys loaded at issuance under its (diversified) transport key
with exactly what `Hsm.write_psam_key` builds: `84 D4 01 P2 Lc enc(attributes || key) MAC`,
attributes `usage(1) | use right(1) | change right(1) | version(1) | algorithm(1)` where the
usage byte's high 3 bits count the diversification levels (0x22: one level, purchase).

Commands: SELECT, GET CHALLENGE, READ BINARY (SFI 15 public data with the serial, SFI 16 the
terminal number), UPDATE BINARY in the clear only before the first key is loaded (issuance),
WRITE KEY, `80 70` purchase MAC1 (diversifies the master by the card's factor(s), takes the
next transaction serial) and `80 72` MAC2 verification.

>>> psam = VirtualPsam(PsamState.blank(bytes(10), bytes(16), bytes.fromhex("001122334455")))
>>> psam.process(bytes.fromhex("00B0960006")).hex().upper()
'0011223344559000'
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hsm import mac, pboc
from hsm.des import Des
from simulators.card.apdu import (
    SW_CLA_UNSUPPORTED,
    SW_FILE_NOT_FOUND,
    SW_INS_UNSUPPORTED,
    SW_MAC_INVALID,
    SW_NOT_ACCEPTED,
    SW_OFFSET_OUT_OF_RANGE,
    SW_REFERENCE_NOT_FOUND,
    SW_SECURITY_STATUS,
    SW_UNKNOWN,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Apdu,
    CardStatus,
    reply,
    status,
)
from simulators.card.purse import bcd_time
from simulators.card.security import check_line_mac, decrypt_sm
from simulators.card.state import read_json, write_atomic

EF_PSAM_PUBLIC = 0x15  # 14 bytes: serial(10) | version(1) | key-card type(1) | reserved(2)
EF_TERMINAL = 0x16  # 6 bytes, BCD terminal number
USAGE_PURCHASE = 0x02  # low 5 bits of the key usage byte
SERIAL_MAX = 0xFFFFFFFF
_ATR_BODY = bytes.fromhex("3B8A8001") + b"MEDSWITCHP"


def _atr() -> bytes:
    check = 0
    for byte in _ATR_BODY[1:]:
        check ^= byte
    return _ATR_BODY + bytes([check])


ATR = _atr()


@dataclass
class PsamKey:
    usage: int
    version: int
    alg: int
    value: bytes = field(repr=False)


@dataclass
class PsamState:
    serial: bytes  # 10 bytes
    transport_key: bytes = field(repr=False)  # 16 bytes, diversified for this PSAM
    terminal_id: bytes = bytes(6)
    term_serial: int = 1  # the serial the next purchase MAC1 takes
    keys: dict[int, PsamKey] = field(default_factory=dict)  # by key version

    @classmethod
    def blank(
        cls,
        serial: bytes,
        transport_key: bytes,
        terminal_id: bytes = bytes(6),
        term_serial: int = 1,
    ) -> PsamState:
        if len(serial) != 10 or len(transport_key) != 16 or len(terminal_id) != 6:
            raise ValueError("a PSAM needs a 10-byte serial, 16-byte key, 6-byte terminal id")
        return cls(serial, transport_key, terminal_id, term_serial)

    @property
    def issued(self) -> bool:
        return bool(self.keys)

    def files(self) -> dict[int, bytes]:
        return {EF_PSAM_PUBLIC: self.serial + b"\x01\x06\x00\x00", EF_TERMINAL: self.terminal_id}

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial.hex(),
            "transport_key": self.transport_key.hex(),
            "terminal_id": self.terminal_id.hex(),
            "term_serial": self.term_serial,
            "keys": [
                {"usage": k.usage, "version": k.version, "alg": k.alg, "value": k.value.hex()}
                for k in self.keys.values()
            ],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PsamState:
        keys = [
            PsamKey(k["usage"], k["version"], k["alg"], bytes.fromhex(k["value"]))
            for k in raw["keys"]
        ]
        return cls(
            bytes.fromhex(raw["serial"]),
            bytes.fromhex(raw["transport_key"]),
            bytes.fromhex(raw["terminal_id"]),
            raw["term_serial"],
            {k.version: k for k in keys},
        )


@dataclass
class _Purchase:
    session: Des
    amount: int


class VirtualPsam:
    def __init__(
        self,
        state: PsamState,
        *,
        path: Path | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.state = state
        self.path = path
        self._random = random_bytes
        self._challenge: bytes | None = None
        self._purchase: _Purchase | None = None
        self.powered = False
        if path is not None:
            self.save()

    def __repr__(self) -> str:
        return f"VirtualPsam(serial={self.state.serial.hex().upper()})"

    @classmethod
    def load(
        cls, path: Path, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> VirtualPsam:
        return cls(PsamState.from_json(read_json(path)), path=path, random_bytes=random_bytes)

    @property
    def atr(self) -> bytes:
        return ATR

    def save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, self.state.to_json())

    def power_on(self) -> bytes:
        self._challenge = None
        self._purchase = None
        self.powered = True
        return ATR

    def power_off(self) -> None:
        self._challenge = None
        self._purchase = None
        self.powered = False

    def process(self, raw: bytes) -> bytes:
        if not self.powered:
            self.power_on()
        try:
            return reply(self._dispatch(Apdu.decode(raw)))
        except CardStatus as outcome:
            return status(outcome.sw)
        except Exception:  # a card never crashes its reader: "no precise diagnosis"
            return status(SW_UNKNOWN)

    def _dispatch(self, apdu: Apdu) -> bytes:
        key = (apdu.cla, apdu.ins)
        if apdu.cla not in (0x00, 0x04, 0x80, 0x84):
            raise CardStatus(SW_CLA_UNSUPPORTED)
        if key == (0x00, 0xA4):
            return self._select(apdu)
        if key == (0x00, 0x84):
            if apdu.le not in (4, 8):
                raise CardStatus(SW_WRONG_LENGTH)
            self._challenge = self._random(apdu.le)
            return self._challenge
        if key == (0x00, 0xB0):
            fid, offset = self._target(apdu)
            data = self.state.files()[fid]
            length = apdu.le if apdu.le not in (None, 256) else len(data) - offset
            return data[offset : offset + length]
        if key == (0x00, 0xD6):
            return self._update_binary(apdu)
        if key == (0x84, 0xD4):
            return self._write_key(apdu)
        if key == (0x80, 0x70):
            return self._purchase_mac1(apdu)
        if key == (0x80, 0x72):
            return self._verify_mac2(apdu)
        raise CardStatus(SW_INS_UNSUPPORTED)

    def _select(self, apdu: Apdu) -> bytes:
        if apdu.p1 == 0x00 and apdu.data in (b"\x3f\x00", b"\x10\x01"):
            return b""
        if apdu.p1 == 0x04 and apdu.data:
            return b""  # one application: any name selects it
        raise CardStatus(SW_FILE_NOT_FOUND)

    def _target(self, apdu: Apdu) -> tuple[int, int]:
        if not apdu.p1 & 0x80:
            raise CardStatus(SW_WRONG_P1P2)
        fid, offset = apdu.p1 & 0x1F, apdu.p2
        files = self.state.files()
        if fid not in files:
            raise CardStatus(SW_FILE_NOT_FOUND)
        if offset >= len(files[fid]):
            raise CardStatus(SW_OFFSET_OUT_OF_RANGE)
        return fid, offset

    def _update_binary(self, apdu: Apdu) -> bytes:
        if self.state.issued:
            raise CardStatus(SW_SECURITY_STATUS)  # issuance data are fixed once keys are in
        fid, offset = self._target(apdu)
        if fid != EF_TERMINAL or offset + len(apdu.data) != 6:
            raise CardStatus(SW_WRONG_LENGTH)
        self.state.terminal_id = self.state.terminal_id[:offset] + apdu.data
        self.save()
        return b""

    def _write_key(self, apdu: Apdu) -> bytes:
        challenge, self._challenge = self._challenge, None
        cipher = check_line_mac(self.state.transport_key, challenge, apdu)
        plain = decrypt_sm(self.state.transport_key, cipher)
        if len(plain) != 5 + 16 or plain[0] & 0x1F != USAGE_PURCHASE or apdu.p1 != 0x01:
            raise CardStatus(SW_WRONG_DATA)
        key = PsamKey(plain[0], plain[3], plain[4], plain[5:])
        self.state.keys[key.version] = key
        self.save()
        return b""

    def _purchase_mac1(self, apdu: Apdu) -> bytes:
        """rnd(4) ctr(2) amount(4) type(1) date(4) time(3) key_ver(1) alg(1) factors(8 each)."""
        self._purchase = None
        data = apdu.data
        if len(data) not in (0x14, 0x1C, 0x24):  # 0, 1 or 2 diversification factors
            raise CardStatus(SW_WRONG_LENGTH)
        rnd, ctr = data[:4], int.from_bytes(data[4:6], "big")
        amount, txn_type = int.from_bytes(data[6:10], "big"), data[10]
        when: datetime = bcd_time(data[11:18])
        key = self.state.keys.get(data[18])
        if key is None:
            raise CardStatus(SW_REFERENCE_NOT_FOUND)
        factors = [data[i : i + 8] for i in range(20, len(data), 8)]
        if len(factors) != key.usage >> 5 or txn_type not in pboc.PURCHASE_TYPES:
            raise CardStatus(SW_WRONG_DATA)
        if self.state.term_serial > SERIAL_MAX:
            raise CardStatus(SW_NOT_ACCEPTED)
        card_key = key.value
        for factor in factors:
            card_key = pboc.diversify(Des(card_key), factor)
        term_serial = self.state.term_serial
        session = Des(pboc.offline_session_key(Des(card_key), rnd, ctr, term_serial))
        mac1 = mac.pboc_mac(
            session, pboc.purchase_mac1_data(amount, txn_type, self.state.terminal_id, when)
        )
        self.state.term_serial += 1
        self.save()
        self._purchase = _Purchase(session, amount)
        return term_serial.to_bytes(4, "big") + mac1

    def _verify_mac2(self, apdu: Apdu) -> bytes:
        purchase, self._purchase = self._purchase, None
        if purchase is None:
            raise CardStatus(SW_NOT_ACCEPTED)
        if len(apdu.data) != 4:
            raise CardStatus(SW_WRONG_LENGTH)
        expected = mac.pboc_mac(purchase.session, pboc.amount_data(purchase.amount))
        if not hmac.compare_digest(expected, apdu.data):
            raise CardStatus(SW_MAC_INVALID)
        return b""

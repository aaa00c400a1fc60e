"""VirtualCard: a PBOC ED/EP medical-insurance card at the APDU level, FMCOS-style.

    card = VirtualCard(CardState.blank(serial, control_key), path=Path("card.json"))
    card.power_on()                    # → ATR
    card.process(bytes.fromhex("00A4040006D15600000503"))   # → response data || SW1 SW2

Files: MF 3F00 ("1PAY.SYS.DDF01") and the medical application DF 1001 (AID D15600000503) with
the ED (0001) and EP (0002) balances, EF 0015 public data (application serial at bytes 11-20),
EF 0016 cardholder data, EF 0017 authorisation data (60 bytes, then a 4-byte data check code),
EF 0018 the cyclic transaction detail (23-byte records, newest first; reading needs the PIN).
EFs are written only by line-protected UPDATE BINARY (`04 D6`, MAC under the DAMK). The record
book (EF 0019, 001A, 001B: simulators.card.records) is written under the record key, by single
commands or a chained script (CLA `14` but for its last command, `04`; command i MACed with
IV challenge ‖ i): after an accepted CLA-14 command the challenge stays pending for command
i+1; the last command, a refused one or any other command ends the script.

State is saved (atomically) after every change when the card has a path. `tear_next(...)` makes
the next CREDIT/DEBIT lose power before or after it writes the balance; `power_off()` drops the
session (PIN state, challenge, pending INITIALIZE) as pulling the card does.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulators.card import purse, records, security
from simulators.card.apdu import (
    SW_APP_LOCKED_PERMANENT,
    SW_CHAINING_UNSUPPORTED,
    SW_CLA_UNSUPPORTED,
    SW_CONDITIONS,
    SW_EEPROM_FAILED,
    SW_FILE_NOT_FOUND,
    SW_FUNCTION_UNSUPPORTED,
    SW_INCOMPATIBLE_FILE,
    SW_INS_UNSUPPORTED,
    SW_OFFSET_OUT_OF_RANGE,
    SW_RECORD_NOT_FOUND,
    SW_SECURITY_STATUS,
    SW_UNKNOWN,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Apdu,
    CardStatus,
    PowerLost,
    reply,
    status,
)
from simulators.card.state import (
    BINARY_SIZES,
    BLOCK_NONE,
    BLOCK_PERMANENT,
    EF_DETAIL,
    CardState,
    read_json,
    write_atomic,
)

MF_FID = 0x3F00
MF_NAME = b"1PAY.SYS.DDF01"
APP_FID = 0x1001
APP_AID = bytes.fromhex("D15600000503")
PURSE_FIDS = (0x0001, 0x0002)
# T=1, 10 historical bytes "MEDSWITCH1", with its check byte.
_ATR_BODY = bytes.fromhex("3B8A8001") + b"MEDSWITCH1"

def _atr() -> bytes:
    check = 0
    for byte in _ATR_BODY[1:]:
        check ^= byte
    return _ATR_BODY + bytes([check])


ATR = _atr()


class Tear(enum.Enum):
    """Where the next CREDIT/DEBIT loses power."""

    BEFORE_UPDATE = "before"  # nothing written: the transaction did not happen
    AFTER_UPDATE = "after"  # balance, counter, detail and proof written; no response sent


@dataclass
class Session:
    in_app: bool = False
    current_ef: int | None = None
    pin_verified: bool = False
    challenge: bytes | None = None
    script_next: int = 0  # a chained script under way: the sequence of its next command
    pending: purse.Pending | None = None


class VirtualCard:
    def __init__(
        self,
        state: CardState,
        *,
        path: Path | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.state = state
        self.path = path
        self._random = random_bytes
        self._session = Session()
        self._tear: Tear | None = None
        self.powered = False
        self.eeprom_fails = False  # simulate a failing write: the next change answers 6581
        if path is not None:
            self.save()

    def __repr__(self) -> str:
        return f"VirtualCard(serial={self.state.serial.hex().upper()})"

    @classmethod
    def load(
        cls, path: Path, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> VirtualCard:
        return cls(CardState.from_json(read_json(path)), path=path, random_bytes=random_bytes)

    @property
    def atr(self) -> bytes:
        return ATR

    def save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, self.state.to_json())

    # -- power --------------------------------------------------------------------------------
    def power_on(self) -> bytes:
        self._session = Session()
        self.powered = True
        return ATR

    def power_off(self) -> None:
        self._session = Session()
        self.powered = False

    def tear_next(self, point: Tear) -> None:
        self._tear = point

    # -- commands -----------------------------------------------------------------------------
    def process(self, raw: bytes) -> bytes:
        """One command APDU → response data || SW. Raises PowerLost when torn."""
        if not self.powered:
            self.power_on()
        try:
            apdu = Apdu.decode(raw)
            return reply(self._dispatch(apdu))
        except CardStatus as outcome:
            return status(outcome.sw)
        except PowerLost:
            raise
        except Exception:  # a card never crashes its reader: "no precise diagnosis"
            return status(SW_UNKNOWN)

    def _dispatch(self, apdu: Apdu) -> bytes:
        if apdu.cla not in (0x00, 0x04, 0x14, 0x80, 0x84):
            raise CardStatus(SW_CLA_UNSUPPORTED)
        s = self._session
        script_write = records.script_write(apdu, s.current_ef)
        if s.script_next and not script_write:  # anything else ends a chained script
            s.challenge, s.script_next = None, 0
        if apdu.cla == 0x14 and not script_write:
            raise CardStatus(SW_CHAINING_UNSUPPORTED)
        if self.state.card_blocked:
            raise CardStatus(SW_FUNCTION_UNSUPPORTED)
        key = (apdu.cla & 0xF0, apdu.ins)
        if apdu.ins == 0xA4 and apdu.cla == 0x00:
            return self._select(apdu)
        if apdu.ins == 0x84 and apdu.cla == 0x00:
            return self._challenge(apdu)
        if key == (0x80, 0x18):  # APPLICATION UNBLOCK
            self._in_app()
            security.application_unblock(self.state, apdu, self._take_challenge(), self._persist)
            return b""
        self._in_app()
        self._check_block()
        if key == (0x00, 0x20):
            security.verify_pin(self.state, apdu, self._persist)
            s.pin_verified = True
            return b""
        if key == (0x80, 0x5E):
            return self._pin_change_or_reload(apdu)
        if key == (0x80, 0x24):
            security.unblock_pin(self.state, apdu, self._take_challenge(), self._persist)
            return b""
        if key == (0x80, 0xD4):
            security.write_key(self.state, apdu, self._take_challenge(), self._persist)
            return b""
        if key == (0x80, 0x1E):
            security.application_block(self.state, apdu, self._take_challenge(), self._persist)
            return b""
        if key == (0x80, 0x16):
            security.card_block(self.state, apdu, self._take_challenge(), self._persist)
            return b""
        if records.targets_records(apdu, s.current_ef):
            return self._record_book(apdu)
        if key == (0x00, 0xB0):
            return self._read_binary(apdu)
        if key == (0x00, 0xD6):
            return self._update_binary(apdu)
        if key == (0x00, 0xB2):
            return self._read_record(apdu)
        return self._purse(apdu)

    def _purse(self, apdu: Apdu) -> bytes:
        if apdu.cla != 0x80:
            raise CardStatus(SW_INS_UNSUPPORTED)
        s = self._session
        if apdu.ins == 0x5C:
            return purse.get_balance(self.state, apdu, s.pin_verified)
        if apdu.ins == 0x50:
            s.pending = None
            response, s.pending = purse.initialize(
                self.state, apdu, s.pin_verified, self._random(4)
            )
            return response
        if apdu.ins == 0x52:
            pending, s.pending = s.pending, None
            return purse.credit_for_load(self.state, apdu, pending, self._commit_purse)
        if apdu.ins == 0x54:
            pending, s.pending = s.pending, None
            if apdu.p1 == 0x03:
                return purse.debit_for_unload(self.state, apdu, pending, self._commit_purse)
            if apdu.p1 != 0x01:
                raise CardStatus(SW_WRONG_P1P2)
            return purse.debit_for_purchase(self.state, apdu, pending, self._commit_purse)
        if apdu.ins == 0x5A:
            return purse.get_transaction_prove(self.state, apdu)
        if apdu.ins == 0x58:  # UPDATE OVERDRAW LIMIT: limits are fixed at zero
            raise CardStatus(SW_FUNCTION_UNSUPPORTED)
        raise CardStatus(SW_INS_UNSUPPORTED)

    # -- state changes ------------------------------------------------------------------------
    def _persist(self, change: Callable[[], None]) -> None:
        if self.eeprom_fails:
            raise CardStatus(SW_EEPROM_FAILED)
        change()
        self.save()

    def _commit_purse(self, change: Callable[[], None]) -> None:
        tear, self._tear = self._tear, None
        if tear is Tear.BEFORE_UPDATE:
            self.power_off()
            raise PowerLost("power lost before the balance update")
        self._persist(change)
        if tear is Tear.AFTER_UPDATE:
            self.power_off()
            raise PowerLost("power lost after the balance update")

    # -- files, challenge ---------------------------------------------------------------------
    def _in_app(self) -> None:
        if not self._session.in_app:
            raise CardStatus(SW_CONDITIONS)

    def _check_block(self) -> None:
        if self.state.app_block == BLOCK_PERMANENT:
            raise CardStatus(SW_APP_LOCKED_PERMANENT)
        if self.state.app_block != BLOCK_NONE:
            raise CardStatus(SW_FUNCTION_UNSUPPORTED)

    def _select(self, apdu: Apdu) -> bytes:
        s = self._session
        if apdu.p1 == 0x04:
            if apdu.data == APP_AID:
                return self._select_app()
            if apdu.data == MF_NAME:
                return self._select_mf()
            raise CardStatus(SW_FILE_NOT_FOUND)
        if apdu.p1 != 0x00 or apdu.p2 != 0x00:
            raise CardStatus(SW_WRONG_P1P2)
        if len(apdu.data) != 2:
            raise CardStatus(SW_WRONG_LENGTH)
        fid = int.from_bytes(apdu.data, "big")
        if fid == MF_FID:
            return self._select_mf()
        if fid == APP_FID:
            return self._select_app()
        known = fid in BINARY_SIZES or fid == EF_DETAIL or fid in records.RECORD_FIDS
        if s.in_app and (known or fid in PURSE_FIDS):
            s.current_ef = fid
            return b""
        raise CardStatus(SW_FILE_NOT_FOUND)

    def _select_mf(self) -> bytes:
        self._session = Session()
        return _fci(MF_NAME)

    def _select_app(self) -> bytes:
        self._session = Session(in_app=True)
        if self.state.app_block == BLOCK_PERMANENT:
            raise CardStatus(SW_APP_LOCKED_PERMANENT)
        if self.state.app_block != BLOCK_NONE:
            raise CardStatus(SW_FUNCTION_UNSUPPORTED)  # selected, but locked
        return _fci(APP_AID)

    def _challenge(self, apdu: Apdu) -> bytes:
        if apdu.p1 != 0 or apdu.p2 != 0:
            raise CardStatus(SW_WRONG_P1P2)
        if apdu.le not in (4, 8):
            raise CardStatus(SW_WRONG_LENGTH)
        self._session.challenge = self._random(apdu.le)
        return self._session.challenge

    def _take_challenge(self) -> bytes | None:
        challenge, self._session.challenge = self._session.challenge, None
        return challenge

    def _pin_change_or_reload(self, apdu: Apdu) -> bytes:
        if apdu.p1 == 0x01 and apdu.p2 == 0x00:
            security.change_pin(self.state, apdu, self._persist)
            self._session.pin_verified = True
        elif apdu.p1 == 0x00 and apdu.p2 == 0x00:
            security.reload_pin(self.state, apdu, self._persist)
        else:
            raise CardStatus(SW_WRONG_P1P2)
        return b""

    def _binary_target(self, apdu: Apdu) -> tuple[int, int]:
        if apdu.p1 & 0x80:
            fid, offset = apdu.p1 & 0x1F, apdu.p2
        elif self._session.current_ef is not None:
            fid, offset = self._session.current_ef, (apdu.p1 << 8) | apdu.p2
        else:
            raise CardStatus(SW_CONDITIONS)
        if fid in PURSE_FIDS or fid == EF_DETAIL:
            raise CardStatus(SW_INCOMPATIBLE_FILE)
        if fid not in BINARY_SIZES:
            raise CardStatus(SW_FILE_NOT_FOUND)
        if offset >= BINARY_SIZES[fid]:
            raise CardStatus(SW_OFFSET_OUT_OF_RANGE)
        self._session.current_ef = fid
        return fid, offset

    def _read_binary(self, apdu: Apdu) -> bytes:
        fid, offset = self._binary_target(apdu)
        data = self.state.binary[fid]
        length = apdu.le if apdu.le is not None and apdu.le != 256 else len(data) - offset
        return data[offset : offset + length]

    def _update_binary(self, apdu: Apdu) -> bytes:
        if apdu.cla != 0x04:
            raise CardStatus(SW_SECURITY_STATUS)
        fid, offset = self._binary_target(apdu)
        content = security.check_line_mac(
            security.maintenance_key(self.state), self._take_challenge(), apdu
        )
        current = self.state.binary[fid]
        if offset + len(content) > len(current):
            raise CardStatus(SW_WRONG_LENGTH)

        def write() -> None:
            self.state.binary[fid] = current[:offset] + content + current[offset + len(content) :]

        self._persist(write)
        return b""

    def _record_book(self, apdu: Apdu) -> bytes:
        """EF 0019 / 001A / 001B: simulators.card.records. A write uses up the challenge, but
        an accepted CLA-14 command keeps it for the script's next command."""
        s = self._session
        fid = records.target(apdu, s.current_ef)
        if apdu.ins == 0xB0:
            return records.read_binary(self.state, apdu, fid, s.pin_verified)
        if apdu.ins == 0xB2:
            return records.read_record(self.state, apdu, fid, s.pin_verified)
        challenge, sequence = s.challenge, s.script_next
        s.challenge, s.script_next = None, 0
        records.write(self.state, apdu, fid, challenge, sequence, self._persist)
        if apdu.cla == 0x14:
            s.challenge, s.script_next = challenge, sequence + 1
        return b""

    def _read_record(self, apdu: Apdu) -> bytes:
        if apdu.p2 & 0x07 != 0x04:
            raise CardStatus(SW_WRONG_P1P2)
        sfi = apdu.p2 >> 3
        fid = sfi if sfi else self._session.current_ef
        if fid in BINARY_SIZES or fid in PURSE_FIDS:
            raise CardStatus(SW_INCOMPATIBLE_FILE)
        if fid != EF_DETAIL:
            raise CardStatus(SW_FILE_NOT_FOUND)
        if not self._session.pin_verified:
            raise CardStatus(SW_SECURITY_STATUS)
        if not 1 <= apdu.p1 <= len(self.state.details):
            raise CardStatus(SW_RECORD_NOT_FOUND)
        return self.state.details[apdu.p1 - 1]


def _fci(name: bytes) -> bytes:
    inner = bytes([0x84, len(name)]) + name + bytes.fromhex("A5049F080102")
    return bytes([0x6F, len(inner)]) + inner

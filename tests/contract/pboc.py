"""A PBOC ED card as a vendor's test bench models it, from the spec and the reference alone:
session keys, MAC1/MAC2, TAC; ED load (online counter) and purchase (offline counter). Its keys
come from a sandbox card image (TEST ONLY: the image holds the diversified card keys as the
chip does) — `diversify` also derives them from a master key, as the spec's identifier table
says (the last 8 bytes of the 10-byte application serial)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tests.contract.wire import des, tdes_ecb

KEY_LOAD, KEY_PURCHASE, KEY_TAC = 0x3F, 0x3E, 0x34
ED, EP = 1, 2
TYPE_ED_LOAD, TYPE_EP_LOAD, TYPE_ED_PURCHASE, TYPE_EP_PURCHASE = 0x01, 0x02, 0x05, 0x06


def diversify(master: bytes, app_serial: bytes) -> bytes:
    """Spec: 3DES(MK, F) ‖ 3DES(MK, F XOR FF…FF), F = the serial's last 8 bytes."""
    factor = app_serial[-8:]
    return tdes_ecb(master, factor) + tdes_ecb(master, bytes(b ^ 0xFF for b in factor))


def pboc_mac(key8: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 1, single DES, IV 0, padding method 2 always; left 4 bytes."""
    padded = data + b"\x80" + bytes((-len(data) - 1) % 8)
    y = bytes(8)
    for i in range(0, len(padded), 8):
        y = des(key8, bytes(a ^ b for a, b in zip(y, padded[i : i + 8], strict=True)))
    return y[:4]


def session_key(card_key: bytes, d8: bytes) -> bytes:
    return tdes_ecb(card_key, d8)


@dataclass(frozen=True, slots=True)
class LoadInit:
    old_balance_fen: int
    online_counter: int
    key_version: int
    algorithm_id: int
    card_random: bytes
    mac1: bytes


@dataclass(frozen=True, slots=True)
class Debit:
    offline_counter: int  # as INITIALIZE FOR PURCHASE returned it (before the debit)
    tac: bytes
    mac2: bytes


@dataclass
class Card:
    app_serial: bytes
    keys: dict[int, bytes]
    key_version: int
    balance_fen: int = 0
    online_counter: int = 0
    offline_counter: int = 0
    purse: int = ED  # the purse this model loads: ED (type 01) or EP (type 02)
    _load: tuple[bytes, int, bytes, int] | None = field(default=None, repr=False)

    @classmethod
    def from_image(cls, path: Path, purse: int = ED) -> Card:
        """The sandbox's card image: the serial, the card keys by type, one purse."""
        raw = json.loads(path.read_text())
        keys = {k["type"]: bytes.fromhex(k["value"]) for k in raw["keys"]}
        version = next(k["version"] for k in raw["keys"] if k["type"] == KEY_LOAD)
        state = raw["purses"][str(purse)]
        return cls(bytes.fromhex(raw["serial"]), keys, version, state["balance"],
                   state["online_ctr"], state["offline_ctr"], purse)

    @property
    def load_type(self) -> int:
        return TYPE_EP_LOAD if self.purse == EP else TYPE_ED_LOAD

    @property
    def purchase_type(self) -> int:
        return TYPE_EP_PURCHASE if self.purse == EP else TYPE_ED_PURCHASE

    def initialize_for_load(self, amount_fen: int, terminal: bytes) -> LoadInit:
        rnd = secrets.token_bytes(4)
        key = session_key(self.keys[KEY_LOAD], rnd + self.online_counter.to_bytes(2, "big")
                          + b"\x80\x00")
        mac1 = pboc_mac(key, self.balance_fen.to_bytes(4, "big") + amount_fen.to_bytes(4, "big")
                        + bytes([self.load_type]) + terminal)
        self._load = (key, amount_fen, terminal, self.online_counter)
        return LoadInit(self.balance_fen, self.online_counter, self.key_version, 0, rnd, mac1)

    def credit_for_load(self, card_datetime: bytes, mac2: bytes) -> bytes:
        """Checks the centre's MAC2 (9302 otherwise), credits, returns the TAC."""
        assert self._load is not None, "CREDIT FOR LOAD without INITIALIZE"
        key, amount, terminal, counter = self._load
        tail = amount.to_bytes(4, "big") + bytes([self.load_type]) + terminal
        assert pboc_mac(key, tail + card_datetime) == mac2, "9302: MAC2 does not verify"
        self.balance_fen += amount
        self.online_counter += 1
        self._load = None
        return pboc_mac(self._tac_key(), self.balance_fen.to_bytes(4, "big")
                        + counter.to_bytes(2, "big") + tail + card_datetime)

    def debit_for_purchase(self, amount_fen: int, terminal: bytes, terminal_serial: int,
                           card_datetime: bytes) -> Debit:
        """INITIALIZE FOR PURCHASE + the PSAM's MAC1 + DEBIT FOR PURCHASE, as one step."""
        assert amount_fen <= self.balance_fen, "9401: insufficient balance"
        rnd = secrets.token_bytes(4)
        counter = self.offline_counter
        serial = terminal_serial.to_bytes(4, "big")
        key = session_key(self.keys[KEY_PURCHASE], rnd + counter.to_bytes(2, "big") + serial[2:])
        amount = amount_fen.to_bytes(4, "big")
        tail = bytes([self.purchase_type]) + terminal
        mac1 = pboc_mac(key, amount + tail + card_datetime)  # the PSAM's, checked by the card
        assert len(mac1) == 4
        self.balance_fen -= amount_fen
        self.offline_counter += 1
        tac = pboc_mac(self._tac_key(), amount + tail + serial + card_datetime)
        return Debit(counter, tac, pboc_mac(key, amount))

    def _tac_key(self) -> bytes:
        dtk = self.keys[KEY_TAC]
        return bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:], strict=True))

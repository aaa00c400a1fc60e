"""A custodian's key card (the seed's "key mother card"): a PIN-protected smart card holding a
custodian's key components, which it gives out only encrypted to the reading HSM's one-time
key (specs/key-ceremony.md §Custodian key cards; the HSM side is `hsm.keycard`).

The card's rules, enforced here as a card's operating system would: the PIN and the HSM the
card is bound to are set once; a wrong PIN counts down from 3 (63Cx) and at 0 the card is
blocked (6983) for good — nothing reads it any more; WRITE and READ COMPONENT need the PIN
verified since the card was powered; a READ must be signed by the bound HSM's identity key
(6988 otherwise); a slot is written once; no command returns a component in clear.

    python -m simulators.keycard new alice.keycard.json
    python -m simulators.vpcd alice.keycard.json --keycard   # into "Virtual PCD 00 00"
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from hsm.des import kcv
from hsm.keycard import (
    INFO_READ,
    INFO_WRITE,
    NONCE_BYTES,
    PUBLIC_BYTES,
    SIGNATURE_BYTES,
    fingerprint,
    public_bytes,
    read_request_message,
    session_key,
)
from simulators.card.state import read_json, write_atomic

AID = bytes.fromhex("D1560000054B43")  # "KC"
ATR = bytes.fromhex("3B8A8001") + b"MEDSWKEYCD" + bytes([0x00])
PIN_TRIES = 3
SW_OK, SW_WRONG_LENGTH, SW_SECURITY, SW_BLOCKED = 0x9000, 0x6700, 0x6982, 0x6983
SW_CONDITIONS, SW_SM_WRONG, SW_WRONG_DATA, SW_NOT_FOUND = 0x6985, 0x6988, 0x6A80, 0x6A83
SW_INS, SW_CLA, SW_P1P2 = 0x6D00, 0x6E00, 0x6B00
SLOTS_MAX, LABEL_MAX = 8, 16


@dataclass
class Slot:
    label: str
    value: bytes
    kcv: str


@dataclass
class KeyCardState:
    private: bytes  # the card's X25519 key: made on the card, never exported
    pin: str | None = None
    hsm_public: bytes | None = None  # the Ed25519 identity of the HSM it is bound to
    tries_left: int = PIN_TRIES
    slots: dict[int, Slot] = field(default_factory=dict)

    @classmethod
    def new(cls, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> KeyCardState:
        private = X25519PrivateKey.from_private_bytes(random_bytes(32))
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(raw)

    def to_json(self) -> dict[str, Any]:
        return {"private": self.private.hex(), "pin": self.pin, "tries_left": self.tries_left,
                "hsm_public": self.hsm_public.hex() if self.hsm_public else None,
                "slots": {str(n): {"label": s.label, "value": s.value.hex(), "kcv": s.kcv}
                          for n, s in self.slots.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyCardState:
        slots = {int(n): Slot(s["label"], bytes.fromhex(s["value"]), s["kcv"])
                 for n, s in raw["slots"].items()}
        bound = bytes.fromhex(raw["hsm_public"]) if raw.get("hsm_public") else None
        return cls(bytes.fromhex(raw["private"]), pin=raw["pin"], hsm_public=bound,
                   tries_left=int(raw["tries_left"]), slots=slots)


class VirtualKeyCard:
    def __init__(self, state: KeyCardState, *, path: Path | None = None,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.state = state
        self.path = path
        self._random = random_bytes
        self._selected = False
        self._verified = False
        self.powered = False
        if path is not None:
            self.save()

    def __repr__(self) -> str:
        return f"VirtualKeyCard({len(self.state.slots)} slots, {self.state.tries_left} tries)"

    @classmethod
    def load(cls, path: Path) -> VirtualKeyCard:
        return cls(KeyCardState.from_json(read_json(path)), path=path)

    @property
    def atr(self) -> bytes:
        return ATR

    def save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, self.state.to_json())

    def power_on(self) -> bytes:
        self._selected = self._verified = False
        self.powered = True
        return ATR

    def power_off(self) -> None:
        self._selected = self._verified = False
        self.powered = False

    @property
    def _private(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.state.private)

    def process(self, raw: bytes) -> bytes:
        if len(raw) < 4:
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        try:
            data = self._dispatch(raw[0], raw[1], raw[2], raw[3], _body(raw))
        except _Status as status:
            return status.sw.to_bytes(2, "big")
        return data + SW_OK.to_bytes(2, "big")

    def _dispatch(self, cla: int, ins: int, p1: int, p2: int, data: bytes) -> bytes:
        if (cla, ins) == (0x00, 0xA4):
            if p1 != 0x04 or data != AID:
                raise _Status(SW_NOT_FOUND)
            self._selected = True
            return b""
        if not self._selected:
            raise _Status(SW_CONDITIONS)
        handlers = {(0x80, 0xCA): self._get_data, (0x80, 0xE0): self._set_pin,
                    (0x00, 0x20): self._verify, (0x80, 0xD2): self._write,
                    (0x80, 0xB2): self._read}
        handler = handlers.get((cla, ins))
        if handler is None:
            raise _Status(SW_CLA if cla not in (0x00, 0x80) else SW_INS)
        return handler(p1, p2, data)

    def _get_data(self, p1: int, p2: int, data: bytes) -> bytes:
        if (p1, p2) == (0x00, 0x00):
            return public_bytes(self._private)
        if (p1, p2) == (0x00, 0x01):  # tries | PIN set | HSM (3) | per slot: n, label, KCV
            out = bytes([self.state.tries_left, self.state.pin is not None])
            bound = self.state.hsm_public
            out += bytes.fromhex(fingerprint(bound)) if bound else bytes(3)
            for number, slot in sorted(self.state.slots.items()):
                label = slot.label.encode()
                out += bytes([number, len(label)]) + label + bytes.fromhex(slot.kcv)
            return out
        raise _Status(SW_P1P2)

    def _set_pin(self, p1: int, p2: int, data: bytes) -> bytes:
        """INITIALISE: the bound HSM's identity (32) then the PIN, once, at the ceremony."""
        if self.state.pin is not None:
            raise _Status(SW_CONDITIONS)
        bound, pin = data[:PUBLIC_BYTES], data[PUBLIC_BYTES:]
        if len(bound) != PUBLIC_BYTES or not 4 <= len(pin) <= 12 or not pin.isdigit():
            raise _Status(SW_WRONG_DATA)
        self.state.hsm_public = bound
        self.state.pin = pin.decode()
        self.save()
        return b""

    def _verify(self, p1: int, p2: int, data: bytes) -> bytes:
        if self.state.pin is None:
            raise _Status(SW_CONDITIONS)
        if self.state.tries_left == 0:
            raise _Status(SW_BLOCKED)
        if not secrets.compare_digest(data, self.state.pin.encode()):
            self._verified = False
            self.state.tries_left -= 1
            self.save()
            raise _Status(SW_BLOCKED if self.state.tries_left == 0
                          else 0x63C0 | self.state.tries_left)
        self.state.tries_left = PIN_TRIES
        self._verified = True
        self.save()
        return b""

    def _require_pin(self) -> None:
        if self.state.tries_left == 0:
            raise _Status(SW_BLOCKED)
        if not self._verified:
            raise _Status(SW_SECURITY)

    def _write(self, slot: int, p2: int, data: bytes) -> bytes:
        self._require_pin()
        if not 1 <= slot <= SLOTS_MAX or not data:
            raise _Status(SW_P1P2)
        if slot in self.state.slots:
            raise _Status(SW_CONDITIONS)  # written once
        label_len = data[0]
        label, sealed = data[1 : 1 + label_len], data[1 + label_len :]
        if not 1 <= label_len <= LABEL_MAX or len(sealed) < PUBLIC_BYTES + NONCE_BYTES + 16 + 8:
            raise _Status(SW_WRONG_LENGTH)
        key = session_key(self._private, sealed[:PUBLIC_BYTES], INFO_WRITE)
        body = sealed[PUBLIC_BYTES:]
        try:
            value = AESGCM(key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], bytes([slot]))
        except InvalidTag:
            raise _Status(SW_SM_WRONG) from None
        if len(value) not in (8, 16, 24):
            raise _Status(SW_WRONG_DATA)
        self.state.slots[slot] = Slot(label.decode("ascii", "replace"), value, kcv(value))
        self.save()
        return b""

    def _read(self, slot: int, p2: int, data: bytes) -> bytes:
        self._require_pin()
        found = self.state.slots.get(slot)
        if found is None:
            raise _Status(SW_NOT_FOUND)
        if len(data) != PUBLIC_BYTES + SIGNATURE_BYTES or self.state.hsm_public is None:
            raise _Status(SW_WRONG_LENGTH)
        one_time, signature = data[:PUBLIC_BYTES], data[PUBLIC_BYTES:]
        try:
            Ed25519PublicKey.from_public_bytes(self.state.hsm_public).verify(
                signature, read_request_message(slot, one_time)
            )
        except InvalidSignature:
            raise _Status(SW_SM_WRONG) from None
        key = session_key(self._private, one_time, INFO_READ)
        nonce = self._random(NONCE_BYTES)
        return nonce + AESGCM(key).encrypt(nonce, found.value, bytes([slot]))


class _Status(Exception):
    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


def _body(raw: bytes) -> bytes:
    """The data of a case 3/4 APDU (CLA INS P1 P2 Lc data [Le]); empty for case 1/2."""
    if len(raw) <= 5:
        return b""
    return raw[5 : 5 + raw[4]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make a blank custodian key card.")
    parser.add_argument("command", choices=["new"])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    VirtualKeyCard(KeyCardState.new(), path=args.out)
    print(f"blank key card -> {args.out}")


if __name__ == "__main__":
    main()

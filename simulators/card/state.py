"""What a virtual card remembers across power cycles, and its file on disk (JSON, written
atomically). Keys are held in clear here: the virtual card is a card (DESIGN §4).

The session (selected file, PIN verified, challenge, pending INITIALIZE) is not in here: it
dies with the power.

>>> state = CardState.blank(bytes.fromhex("00010203040506070809"), bytes(16))
>>> CardState.from_json(state.to_json()) == state
True
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Key types (FMCOS, reference §1.1) and the names DESIGN §4 gives them.
KEY_CONTROL = 0x39  # master control key (external authentication type): protects WRITE KEY
KEY_LOAD = 0x3F  # DLK
KEY_PURCHASE = 0x3E  # DPK
KEY_UNLOAD = 0x3D  # DULK
KEY_OVERDRAW = 0x3C  # DUK (never used: overdraw limits are fixed at zero)
KEY_TAC = 0x34  # DTK
KEY_PIN_UNBLOCK = 0x37  # DPUK
KEY_PIN_RELOAD = 0x38  # DRPK
KEY_APP_MAINT = 0x36  # DAMK
KEY_TYPES = frozenset(
    {
        KEY_CONTROL,
        KEY_LOAD,
        KEY_PURCHASE,
        KEY_UNLOAD,
        KEY_OVERDRAW,
        KEY_TAC,
        KEY_PIN_UNBLOCK,
        KEY_PIN_RELOAD,
        KEY_APP_MAINT,
    }
)

PURSE_ED = 0x01
PURSE_EP = 0x02

# Files of the medical application DF.
EF_PUBLIC = 0x15  # 30 bytes, application serial at bytes 11-20
EF_HOLDER = 0x16  # 39 bytes
EF_AUTHORISATION = 0x17  # 64 bytes: 60 of authorisation data, then the 4-byte data check code
EF_DETAIL = 0x18  # cyclic, 23-byte records
BINARY_SIZES = {EF_PUBLIC: 30, EF_HOLDER: 39, EF_AUTHORISATION: 64}
DETAIL_RECORD_BYTES = 23
DETAIL_RECORDS_MAX = 10
SERIAL_OFFSET = 10  # bytes 11-20 of EF 0015, 1-based

BLOCK_NONE = ""
BLOCK_TEMPORARY = "temporary"
BLOCK_PERMANENT = "permanent"


@dataclass
class CardKey:
    key_type: int
    index: int
    version: int
    alg: int
    value: bytes = field(repr=False)  # a clear key: never in a repr, a log or an assertion

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.key_type,
            "index": self.index,
            "version": self.version,
            "alg": self.alg,
            "value": self.value.hex(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CardKey:
        value = bytes.fromhex(raw["value"])
        return cls(raw["type"], raw["index"], raw["version"], raw["alg"], value)


@dataclass
class Purse:
    balance: int = 0
    online_ctr: int = 0
    offline_ctr: int = 0
    overdraft: int = 0


@dataclass
class Proof:
    """The last transaction of a type, for GET TRANSACTION PROVE: its counter as INITIALIZE
    returned it, and the MAC (MAC2 of a load or purchase, MAC3 of an unload) and TAC."""

    ctr: int
    mac: bytes
    tac: bytes


@dataclass
class CardState:
    serial: bytes
    keys: dict[tuple[int, int], CardKey] = field(default_factory=dict)
    pin: bytes | None = field(default=None, repr=False)  # BCD; None until a RELOAD/UNBLOCK
    pin_tries_max: int = 3
    pin_tries_left: int = 3
    binary: dict[int, bytes] = field(default_factory=dict)
    details: list[bytes] = field(default_factory=list)  # newest first
    visits: list[bytes] = field(default_factory=list)  # EF 001A (simulators.card.records)
    # EF 001B: the centre's signatures, 4 records of 128 bytes (zeros: never written)
    signatures: list[bytes] = field(default_factory=lambda: [bytes(128)] * 4)
    purses: dict[int, Purse] = field(default_factory=dict)
    proofs: dict[int, Proof] = field(default_factory=dict)  # by transaction type
    app_block: str = BLOCK_NONE
    card_blocked: bool = False

    @classmethod
    def blank(
        cls, serial: bytes, control_key: bytes, pin_tries: int = 3, pin: bytes | None = None
    ) -> CardState:
        """A card as the chip maker delivers it: the file structure, the application serial,
        the (diversified) master control key and possibly a factory PIN, nothing else."""
        if len(serial) != 10 or len(control_key) != 16:
            raise ValueError("a card needs a 10-byte serial and a 16-byte control key")
        public = bytearray(BINARY_SIZES[EF_PUBLIC])
        public[SERIAL_OFFSET : SERIAL_OFFSET + 10] = serial
        binary = {fid: bytes(size) for fid, size in BINARY_SIZES.items()}
        binary[EF_PUBLIC] = bytes(public)
        control = CardKey(KEY_CONTROL, 0, 0, 0, control_key)
        return cls(
            serial=serial,
            keys={(KEY_CONTROL, 0): control},
            pin=pin,
            pin_tries_max=pin_tries,
            pin_tries_left=pin_tries,
            binary=binary,
            purses={PURSE_ED: Purse(), PURSE_EP: Purse()},
        )

    def key(self, key_type: int, index: int) -> CardKey | None:
        return self.keys.get((key_type, index))

    def any_key(self, key_type: int, index: int) -> CardKey | None:
        """The key of that index, else the lowest index of the type (the TAC key)."""
        found = self.keys.get((key_type, index))
        if found is not None:
            return found
        candidates = sorted(k for k in self.keys if k[0] == key_type)
        return self.keys[candidates[0]] if candidates else None

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial.hex(),
            "keys": [k.to_json() for k in self.keys.values()],
            "pin": self.pin.hex() if self.pin is not None else None,
            "pin_tries_max": self.pin_tries_max,
            "pin_tries_left": self.pin_tries_left,
            "binary": {f"{fid:04X}": data.hex() for fid, data in self.binary.items()},
            "details": [d.hex() for d in self.details],
            "visits": [v.hex() for v in self.visits],
            "signatures": [r.hex() for r in self.signatures],
            "purses": {str(p): vars(purse) for p, purse in self.purses.items()},
            "proofs": {
                str(t): {"ctr": p.ctr, "mac": p.mac.hex(), "tac": p.tac.hex()}
                for t, p in self.proofs.items()
            },
            "app_block": self.app_block,
            "card_blocked": self.card_blocked,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CardState:
        keys = [CardKey.from_json(k) for k in raw["keys"]]
        return cls(
            serial=bytes.fromhex(raw["serial"]),
            keys={(k.key_type, k.index): k for k in keys},
            pin=bytes.fromhex(raw["pin"]) if raw["pin"] is not None else None,
            pin_tries_max=raw["pin_tries_max"],
            pin_tries_left=raw["pin_tries_left"],
            binary={int(fid, 16): bytes.fromhex(d) for fid, d in raw["binary"].items()},
            details=[bytes.fromhex(d) for d in raw["details"]],
            visits=[bytes.fromhex(v) for v in raw.get("visits", [])],  # none before the book
            signatures=[bytes.fromhex(r) for r in raw.get("signatures", [])] or [bytes(128)] * 4,
            purses={int(p): Purse(**v) for p, v in raw["purses"].items()},
            proofs={
                int(t): Proof(p["ctr"], bytes.fromhex(p["mac"]), bytes.fromhex(p["tac"]))
                for t, p in raw["proofs"].items()
            },
            app_block=raw["app_block"],
            card_blocked=raw["card_blocked"],
        )


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON next to `path`, fsync it, then rename over `path`: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as src:
        loaded: dict[str, Any] = json.load(src)
    return loaded

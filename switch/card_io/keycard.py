"""A custodian's key card over a card connection (IO; the cryptography is `hsm.keycard`, the
card `simulators.keycard`; APDUs in specs/key-ceremony.md §Custodian key cards)."""

from __future__ import annotations

from dataclasses import dataclass

from switch.card_io.connection import CardConnection, CardConnectionError

AID = bytes.fromhex("D1560000054B43")
SELECT = bytes.fromhex("00A4040007") + AID
GET_PUBLIC = bytes.fromhex("80CA000000")
GET_STATUS = bytes.fromhex("80CA000100")


class KeyCardError(CardConnectionError):
    """The key card refused: wrong PIN (with the tries left), blocked, or another rule."""


@dataclass(frozen=True, slots=True)
class SlotInfo:
    slot: int
    label: str
    kcv: str


@dataclass(frozen=True, slots=True)
class KeyCardStatus:
    tries_left: int
    pin_set: bool
    bound_to: str  # the fingerprint of the HSM identity the card answers reads for
    slots: tuple[SlotInfo, ...]


def _refusal(what: str, sw: int) -> KeyCardError:
    if sw & 0xFFF0 == 0x63C0:
        left = sw & 0x0F
        return KeyCardError(f"wrong PIN: {left} {'try' if left == 1 else 'tries'} left")
    reasons = {0x6983: "the key card is blocked (PIN tried too often)",
               0x6982: "the PIN is not verified", 0x6985: "refused by the card's rules",
               0x6A83: "no component in that slot",
               0x6988: "the card refused the data (not sealed for it, or not signed by the HSM"
                       " it is bound to)",
               0x6A80: "the card refused the data"}
    return KeyCardError(f"{what}: {reasons.get(sw, f'status {sw:04X}')}")


def _send(conn: CardConnection, apdu: bytes, what: str) -> bytes:
    data, sw = conn.transmit(apdu)
    if sw != 0x9000:
        if what == "SET PIN" and sw == 0x6985:
            raise KeyCardError("SET PIN: the card already has a PIN")
        if what.startswith("WRITE") and sw == 0x6985:
            raise KeyCardError(f"{what}: the slot is written already (slots are written once)")
        raise _refusal(what, sw)
    return data


def _apdu(header: bytes, data: bytes, le: bool = False) -> bytes:
    if len(data) > 255:
        raise ValueError("APDU data over 255 bytes")
    return header + bytes([len(data)]) + data + (b"\x00" if le else b"")


def select(conn: CardConnection) -> None:
    _send(conn, SELECT, "SELECT")


def public_key(conn: CardConnection) -> bytes:
    return _send(conn, GET_PUBLIC, "GET DATA")


def status(conn: CardConnection) -> KeyCardStatus:
    data = _send(conn, GET_STATUS, "GET DATA")
    if len(data) < 5:
        raise KeyCardError("GET DATA: short answer")
    slots, at = [], 5
    while at + 2 <= len(data):
        number, length = data[at], data[at + 1]
        label = data[at + 2 : at + 2 + length].decode("ascii", "replace")
        check = data[at + 2 + length : at + 5 + length].hex().upper()
        slots.append(SlotInfo(number, label, check))
        at += 5 + length
    return KeyCardStatus(data[0], bool(data[1]), data[2:5].hex().upper(), tuple(slots))


def initialise(conn: CardConnection, hsm_public: bytes, pin: str) -> None:
    """Bind a blank card to the HSM's identity and set its PIN (once)."""
    _send(conn, _apdu(bytes.fromhex("80E00000"), hsm_public + pin.encode()), "SET PIN")


def verify(conn: CardConnection, pin: str) -> None:
    _send(conn, _apdu(bytes.fromhex("00200001"), pin.encode()), "VERIFY")


def write_component(conn: CardConnection, slot: int, label: str, sealed: bytes) -> None:
    name = label.encode("ascii")
    body = bytes([len(name)]) + name + sealed
    _send(conn, _apdu(bytes([0x80, 0xD2, slot, 0x00]), body), f"WRITE COMPONENT {slot}")


def read_component(conn: CardConnection, slot: int, request: bytes) -> bytes:
    """REQUEST: the one-time public key and the HSM identity's signature over it."""
    apdu = _apdu(bytes([0x80, 0xB2, slot, 0x00]), request, le=True)
    return _send(conn, apdu, f"READ COMPONENT {slot}")

"""ISO 7816-4 command APDUs and the status words a PBOC ED/EP card and a PSAM answer
(reference pboc-and-cup-pos.md §1.4), shared by the virtual card and the virtual PSAM.

>>> cmd = Apdu.decode(bytes.fromhex("805000020B0100002000001122334455" "10"))
>>> (hex(cmd.ins), cmd.p1, cmd.p2, cmd.data.hex(), cmd.le)
('0x50', 0, 2, '0100002000001122334455', 16)
>>> Apdu.decode(bytes.fromhex("0084000004")).le
4
>>> reply(b"\\x01", SW_OK).hex()
'019000'
"""

from __future__ import annotations

from dataclasses import dataclass

from switch.card_io.connection import CardRemovedError

SW_OK = 0x9000
SW_MAC_INVALID = 0x9302
SW_APP_LOCKED_PERMANENT = 0x9303
SW_INSUFFICIENT_BALANCE = 0x9401
SW_COUNTER_MAX = 0x9402
SW_KEY_INDEX_UNSUPPORTED = 0x9403
SW_MAC_UNAVAILABLE = 0x9406
SW_WRONG_LENGTH = 0x6700
SW_EEPROM_FAILED = 0x6581
SW_NOT_ACCEPTED = 0x6901
SW_SECURITY_STATUS = 0x6982
SW_AUTH_BLOCKED = 0x6983
SW_REFERENCE_DATA_INVALID = 0x6984  # also: no GET CHALLENGE before a protected command
SW_CONDITIONS = 0x6985
SW_SM_DATA_INCORRECT = 0x6988
SW_INCOMPATIBLE_FILE = 0x6981
SW_WRONG_DATA = 0x6A80
SW_FUNCTION_UNSUPPORTED = 0x6A81
SW_FILE_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_REFERENCE_NOT_FOUND = 0x6A88
SW_WRONG_P1P2 = 0x6A86
SW_OFFSET_OUT_OF_RANGE = 0x6B00
SW_INS_UNSUPPORTED = 0x6D00
SW_CLA_UNSUPPORTED = 0x6E00
SW_CHAINING_UNSUPPORTED = 0x6884  # the chaining bit on a command that is not a script's write
SW_PIN_TRIES_BASE = 0x63C0  # 63Cx: x tries left
SW_UNKNOWN = 0x6F00  # no precise diagnosis (a fault in the simulator itself)


class CardStatus(Exception):
    """A command ends with this status word and no data (the card state is unchanged
    unless the handler changed it on purpose before raising, e.g. a PIN try counter)."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


class PowerLost(CardRemovedError):
    """The card lost power in the middle of a command (tearing): no response at all."""


@dataclass(frozen=True, slots=True)
class Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # None: no Le; 0 in the encoding means 256

    @classmethod
    def decode(cls, raw: bytes) -> Apdu:
        """Short APDUs, cases 1-4. Raises CardStatus(6700) on an inconsistent length."""
        if len(raw) < 4:
            raise CardStatus(SW_WRONG_LENGTH)
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, b"", body[0] or 256)
        lc = body[0]
        if lc == 0 or len(body) not in (1 + lc, 2 + lc):
            raise CardStatus(SW_WRONG_LENGTH)
        data = body[1 : 1 + lc]
        le = (body[1 + lc] or 256) if len(body) == 2 + lc else None
        return cls(cla, ins, p1, p2, data, le)

    def header(self) -> bytes:
        return bytes([self.cla, self.ins, self.p1, self.p2])

    def encode(self) -> bytes:
        out = self.header()
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le & 0xFF])
        return out


def reply(data: bytes, sw: int = SW_OK) -> bytes:
    return data + sw.to_bytes(2, "big")


def status(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def require_length(apdu: Apdu, length: int) -> bytes:
    if len(apdu.data) != length:
        raise CardStatus(SW_WRONG_LENGTH)
    return apdu.data


def split_mac(apdu: Apdu) -> tuple[bytes, bytes]:
    """A line-protected command: (the MACed header || Lc || data, the trailing 4-byte MAC)."""
    if len(apdu.data) < 4:
        raise CardStatus(SW_WRONG_LENGTH)
    body = apdu.header() + bytes([len(apdu.data)]) + apdu.data[:-4]
    return body, apdu.data[-4:]

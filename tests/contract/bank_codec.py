"""A bank host's messages as specs/bank-interface.md describes them, written from the spec
alone and encoded by hand (no ISO 8583 library): the field table and the dialect presets are
read from the spec's own tables; frames (4 ASCII digits, 2 bytes or no header), bitmaps,
fields (ASCII or packed BCD numerics), the X9.19 MAC with its padding and the ISO 9564
format 0 PIN block follow the spec's words ("Frame", "Dialects", "MAC"). The peer that speaks
them is `bank_peer.py`. Imports nothing of medswitch."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from tests.contract.wire import TripleDES, tdes_ecb

SPEC = (Path(__file__).resolve().parents[2] / "specs" / "bank-interface.md").read_text()
Value = str | bytes


# -- the spec's tables ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    kind: str  # n, z, an, ans, b
    length: int  # digits or characters; bytes for b
    prefix: int  # 0 fixed, 2 LL, 3 LLL


def field_table() -> dict[int, Field]:
    """The generated field table: `| 2 | name | n..19 | ASCII LL | |`; b64 is 8 bytes."""
    table = {}
    for found in re.finditer(r"^\| (\d+) \| [^|]+ \| (n|z|ans|an|b)(\.*)(\d+) \|", SPEC, re.M):
        number, kind, dots, size = found.groups()
        length = int(size) // 8 if kind == "b" and not dots else int(size)
        table[int(number)] = Field(kind, length, len(dots))
    return table


def presets() -> dict[str, dict[str, str]]:
    """The "Dialects" table: preset → setting → value."""
    lines = [line for line in SPEC.splitlines() if line.startswith("| ")]
    header = next(line for line in lines if line.startswith("| setting | values |"))
    names = re.findall(r"`([\w-]+)`", header)
    found: dict[str, dict[str, str]] = {name: {} for name in names}
    for line in lines[lines.index(header) + 1 :]:  # (the |---| row is not among them)
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 2 + len(names) or not cells[0].startswith("`"):
            break
        setting = re.findall(r"`(\w+)`", cells[0])[0]
        for name, cell in zip(names, cells[2:], strict=True):
            found[name][setting] = cell.strip("`")
    return found


FIELDS = field_table()


# -- a message in a dialect (spec: "Frame", "Dialects") -------------------------------------


@dataclass(frozen=True, slots=True)
class Dialect:
    length_header: str
    bitmap: str
    binary_fields: str
    numerics: str
    request_mac: str
    response_mac: str
    network_mac: str
    mac_field: int
    mac_padding: str

    @classmethod
    def of(cls, preset: str, **overrides: str) -> Dialect:
        """The preset's column of the "Dialects" table, with a section's overrides."""
        settings = {**presets()[preset], **overrides}
        return cls(settings["length_header"], settings["bitmap"], settings["binary_fields"],
                   settings["numerics"], settings["request_mac"], settings["response_mac"],
                   settings["network_mac"],
                   int(settings["mac_field"]), settings["mac_padding"])

    @property
    def bcd(self) -> bool:
        return self.numerics == "bcd"

    @property
    def mac_width(self) -> int:
        return 16 if self.binary_fields == "hex" else 8


@dataclass
class Msg:
    mti: str
    fields: dict[int, Value]
    raw: bytes = b""  # as received, without the length header

    def text(self, number: int) -> str:
        value = self.fields[number]
        assert isinstance(value, str)
        return value


def _binary_out(dialect: Dialect, number: int, value: bytes) -> bytes:
    if FIELDS[number].prefix == 0 and dialect.binary_fields == "hex":
        return value.hex().upper().encode()
    return value


def _packed(digits: str, *, trailing: bool = False) -> bytes:
    """Digits as packed BCD; an odd count padded with a 0 nibble (leading unless ``trailing``)."""
    if len(digits) % 2:
        digits = digits + "0" if trailing else "0" + digits
    return bytes.fromhex(digits)


def _prefix(dialect: Dialect, spec: Field, count: int) -> bytes:
    """An LL/LLL prefix: ASCII digits, or (bcd) 1 byte for LL and 2 bytes for LLL."""
    if dialect.bcd:
        return _packed(str(count).zfill(2 * (spec.prefix - 1)))
    return str(count).zfill(spec.prefix).encode()


def encode(dialect: Dialect, mti: str, fields: dict[int, Value]) -> bytes:
    """MTI (4 ASCII digits, or 2 bytes of BCD), bitmaps, fields in order; no length header."""
    numbers = sorted(fields)
    secondary = any(n > 64 for n in numbers)
    bits = 0
    for n in numbers + ([1] if secondary else []):
        bits |= 1 << (128 - n)
    maps = bits.to_bytes(16, "big")[: 16 if secondary else 8]
    out = _packed(mti) if dialect.bcd else mti.encode()
    for i in range(0, len(maps), 8):
        chunk = maps[i : i + 8]
        out += chunk.hex().upper().encode() if dialect.bitmap == "hex" else chunk
    for n in numbers:
        spec, value = FIELDS[n], fields[n]
        if spec.kind == "b":
            assert isinstance(value, bytes)
            data = _binary_out(dialect, n, value)
            count = len(value)
        else:
            assert isinstance(value, str)
            assert spec.kind != "z" or not dialect.bcd, "this peer sends no track data in BCD"
            if spec.prefix == 0 and spec.kind == "n":
                value = value.rjust(spec.length, "0")
            count = len(value)
            packed = dialect.bcd and spec.kind == "n"
            data = _packed(value, trailing=spec.prefix > 0) if packed else value.encode()
            assert spec.prefix or count == spec.length, f"F{n} is {spec.length} long"
        if spec.prefix:
            out += _prefix(dialect, spec, count)
        out += data
    return out


class Short(Exception):
    """The bytes end inside the message (a stream without a length header: read more)."""


def decode(dialect: Dialect, raw: bytes) -> Msg:
    msg, used = parse(dialect, raw)
    assert used == len(raw), f"{msg.mti}: {len(raw) - used} bytes after the last field"
    return msg


def parse(dialect: Dialect, raw: bytes) -> tuple[Msg, int]:
    """The message ``raw`` starts with and how many bytes it takes; Short when it ends early."""
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(raw):
            raise Short
        at += n
        return raw[at - n : at]

    mti = take(2).hex() if dialect.bcd else take(4).decode()
    width = 16 if dialect.bitmap == "hex" else 8

    def bitmap() -> int:
        chunk = take(width)
        return int(chunk.decode(), 16) if dialect.bitmap == "hex" else int.from_bytes(chunk, "big")

    bits = bitmap() << 64
    if bits >> 127 & 1:
        bits |= bitmap()
    fields: dict[int, Value] = {}
    for n in range(2, 129):
        if not bits >> (128 - n) & 1:
            continue
        spec = FIELDS[n]
        count = spec.length
        if spec.prefix and dialect.bcd:
            count = int(take(spec.prefix - 1).hex())
        elif spec.prefix:
            count = int(take(spec.prefix))
        if spec.kind == "b":
            if spec.prefix == 0 and dialect.binary_fields == "hex":
                fields[n] = bytes.fromhex(take(2 * count).decode())
            else:
                fields[n] = take(count)
        elif dialect.bcd and spec.kind == "n":
            digits = take((count + 1) // 2).hex()
            fields[n] = digits[:count] if spec.prefix else digits[-count:]
        else:
            fields[n] = take(count).decode()
    return Msg(mti, fields, raw[:at]), at


def frame(dialect: Dialect, payload: bytes) -> bytes:
    if dialect.length_header == "ascii4":
        return b"%04d" % len(payload) + payload
    if dialect.length_header == "none":
        return payload
    assert dialect.length_header == "binary2", dialect.length_header
    return len(payload).to_bytes(2, "big") + payload


class Stream:
    """Messages off one connection: after a length header, or (``none``) where the fields the
    bitmaps name end."""

    def __init__(self, dialect: Dialect, sock: socket.socket) -> None:
        self.dialect, self.sock, self.buffer = dialect, sock, b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            if not self._fill():
                return None
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read(self) -> bytes | None:
        """One message's bytes (without its header); None when the peer closed."""
        if self.dialect.length_header == "none":
            while True:
                try:
                    _, used = parse(self.dialect, self.buffer)
                except Short:
                    if not self._fill():
                        return None
                    continue
                return self._take(used)
        width = 4 if self.dialect.length_header == "ascii4" else 2
        head = self._take(width)
        if head is None:
            return None
        return self._take(int(head) if width == 4 else int.from_bytes(head, "big"))


# -- cryptography (spec: "MAC"; PINs ISO 9564 format 0) -------------------------------------


def _des(key8: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key8 * 3), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def x919(zak: bytes, data: bytes, padding: str) -> bytes:
    """ISO 9797-1 MAC algorithm 3 with DES under K1 ‖ K2, padded by method 1 or 2."""
    if padding == "method2":
        data += b"\x80"
    data += bytes(-len(data) % 8)
    k1, k2 = zak[:8], zak[8:]
    y = bytes(8)
    for i in range(0, len(data), 8):
        y = _des(k1, bytes(a ^ b for a, b in zip(y, data[i : i + 8], strict=True)))
    return _des(k1, _des(k2, y, decrypt=True))


def sealed(dialect: Dialect, zak: bytes, mti: str, fields: dict[int, Value]) -> bytes:
    """The payload with its MAC field over every byte from the MTI to the byte before it: F128,
    or F64 when the dialect says so and no field above 64 is there."""
    where = 64 if dialect.mac_field == 64 and max(fields) <= 64 else 128
    unsigned = encode(dialect, mti, {**fields, where: bytes(8)})
    block = unsigned[: -dialect.mac_width]
    return encode(dialect, mti, {**fields, where: x919(zak, block, dialect.mac_padding)})


def mac_verifies(dialect: Dialect, zak: bytes, msg: Msg) -> bool:
    mac = msg.fields.get(128, msg.fields.get(64))
    block = msg.raw[: -dialect.mac_width]
    return isinstance(mac, bytes) and mac == x919(zak, block, dialect.mac_padding)


def pin_block(pin: str, pan: str, zpk: bytes) -> bytes:
    clear = bytes.fromhex(f"0{len(pin)}{pin}".ljust(16, "F"))
    account = bytes.fromhex("0000" + pan[-13:-1])
    return tdes_ecb(zpk, bytes(a ^ b for a, b in zip(clear, account, strict=True)))


def pin_of(block: bytes, pan: str, zpk: bytes) -> str:
    account = bytes.fromhex("0000" + pan[-13:-1])
    clear = bytes(a ^ b for a, b in zip(tdes_ecb(zpk, block, decrypt=True), account,
                                        strict=True)).hex().upper()
    return clear[2 : 2 + int(clear[1], 16)]


def gmt_now() -> str:
    return datetime.now(UTC).strftime("%m%d%H%M%S")

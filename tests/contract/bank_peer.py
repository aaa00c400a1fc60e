"""A bank host's side of specs/bank-interface.md, written from the spec alone and encoded by
hand (no ISO 8583 library): the field table and the dialect presets are read from the spec's
own tables; frames, bitmaps, fields, the X9.19 MAC with its padding and the ISO 9564 format 0
PIN block follow the spec's words ("Frame", "Dialects", "MAC"). Two roles: the bank's counters
(a client of the centre's inbound link) and the bank as savings issuer (a server the centre's
outbound link connects to). Imports nothing of medswitch."""

from __future__ import annotations

import queue
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from tests.contract.wire import TripleDES, tdes_ecb

SPEC = (Path(__file__).resolve().parents[2] / "specs" / "bank-interface.md").read_text()
REPLY_S = 15.0
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
    mac_field: int
    mac_padding: str

    @classmethod
    def of(cls, preset: str) -> Dialect:
        settings = presets()[preset]
        assert settings["numerics"] == "ascii", "this peer writes ASCII numerics only"
        return cls(settings["length_header"], settings["bitmap"], settings["binary_fields"],
                   int(settings["mac_field"]), settings["mac_padding"])

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


def encode(dialect: Dialect, mti: str, fields: dict[int, Value]) -> bytes:
    """MTI (4 ASCII digits), bitmaps, fields in order; no length header."""
    numbers = sorted(fields)
    secondary = any(n > 64 for n in numbers)
    bits = 0
    for n in numbers + ([1] if secondary else []):
        bits |= 1 << (128 - n)
    maps = bits.to_bytes(16, "big")[: 16 if secondary else 8]
    out = mti.encode()
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
            if spec.prefix == 0 and spec.kind == "n":
                value = value.rjust(spec.length, "0")
            data = value.encode()
            count = len(data)
            assert spec.prefix or count == spec.length, f"F{n} is {spec.length} long"
        if spec.prefix:
            out += str(count).zfill(spec.prefix).encode()
        out += data
    return out


def decode(dialect: Dialect, raw: bytes) -> Msg:
    at = 4
    mti = raw[:4].decode()
    width = 16 if dialect.bitmap == "hex" else 8

    def bitmap() -> int:
        nonlocal at
        chunk = raw[at : at + width]
        at += width
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
        if spec.prefix:
            count = int(raw[at : at + spec.prefix])
            at += spec.prefix
        if spec.kind == "b":
            if spec.prefix == 0 and dialect.binary_fields == "hex":
                fields[n] = bytes.fromhex(raw[at : at + 2 * count].decode())
                at += 2 * count
            else:
                fields[n] = raw[at : at + count]
                at += count
        else:
            fields[n] = raw[at : at + count].decode()
            at += count
    assert at == len(raw), f"{mti}: {len(raw) - at} bytes after the last field"
    return Msg(mti, fields, raw)


def frame(dialect: Dialect, payload: bytes) -> bytes:
    if dialect.length_header == "ascii4":
        return b"%04d" % len(payload) + payload
    assert dialect.length_header == "binary2", "this peer frames with a length header"
    return len(payload).to_bytes(2, "big") + payload


def read_frame(dialect: Dialect, sock: socket.socket) -> bytes | None:
    """One frame's payload; None when the peer closed."""
    width = 4 if dialect.length_header == "ascii4" else 2
    head = _read(sock, width)
    if head is None:
        return None
    size = int(head) if width == 4 else int.from_bytes(head, "big")
    return _read(sock, size)


def _read(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


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


# -- the bank's counters: a client of the centre's inbound link -----------------------------


class Counter:
    def __init__(self, dialect: Dialect, port: int, bank_id: str, zak: bytes) -> None:
        self.dialect, self.bank_id, self.zak = dialect, bank_id, zak
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_S)
        self.stan = 0

    def envelope(self) -> dict[int, Value]:
        self.stan += 1
        return {7: gmt_now(), 11: f"{self.stan:06d}", 32: self.bank_id, 41: "CTR00001",
                42: "BRANCH000000001"}

    def exchange(self, mti: str, fields: dict[int, Value], *, mac: bool = True) -> Msg:
        request = {**self.envelope(), **fields}
        payload = (sealed(self.dialect, self.zak, mti, request) if mac
                   else encode(self.dialect, mti, request))
        self.sock.sendall(frame(self.dialect, payload))
        raw = read_frame(self.dialect, self.sock)
        assert raw is not None, "the centre closed the connection"
        reply = decode(self.dialect, raw)
        assert reply.mti == f"{int(mti) // 10 * 10 + 10:04d}", reply.mti
        for n in (7, 11, 32):
            assert reply.fields.get(n) == request[n], f"F{n} not echoed"
        if mac:  # spec: every reply to a MACed request carries its own F128
            assert mac_verifies(self.dialect, self.zak, reply), f"{reply.mti}: F128 is wrong"
        return reply

    def close(self) -> None:
        self.sock.close()


# -- the bank as savings issuer: the centre's outbound link connects here --------------------


@dataclass
class Issuer:
    dialect: Dialect
    zak: bytes  # the outbound link's ZAK
    zpk: bytes  # the outbound link's ZPK
    pin: str  # the cardholder's PIN the bank knows
    bank_id: str
    hold_debits: bool = False  # take debits but never answer (the centre times out)
    stan: int = 0  # the bank's own requests on the centre's connection
    requests: queue.Queue[Msg] = field(default_factory=queue.Queue)
    responses: queue.Queue[Msg] = field(default_factory=queue.Queue)
    _conn: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self._conn = conn
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while (raw := read_frame(self.dialect, conn)) is not None:
                msg = decode(self.dialect, raw)
                if int(msg.mti[2]) % 2:
                    self.responses.put(msg)
                    continue
                self.requests.put(msg)
                answer = self._answer(msg)
                if answer is not None:
                    with self._lock:
                        conn.sendall(frame(self.dialect, answer))

    def _answer(self, msg: Msg) -> bytes | None:
        echoed = {n: v for n, v in msg.fields.items() if n in (2, 3, 4, 7, 11, 32, 70, 90)}
        reply_mti = f"{int(msg.mti) // 10 * 10 + 10:04d}"
        if msg.mti == "0800":  # network management: MAC optional, none sent
            return encode(self.dialect, reply_mti, {**echoed, 39: "00"})
        if not mac_verifies(self.dialect, self.zak, msg):
            return encode(self.dialect, reply_mti, {**echoed, 39: "A0"})
        code = "00"
        if msg.mti == "0200":
            block = msg.fields[52]
            assert isinstance(block, bytes)
            code = "00" if pin_of(block, msg.text(2), self.zpk) == self.pin else "55"
            if self.hold_debits:
                return None
        return sealed(self.dialect, self.zak, reply_mti, {**echoed, 39: code})

    def request(self, mti: str, fields: dict[int, Value], *, mac: bool = False) -> Msg:
        """The bank's own request on the centre's outbound connection; the centre's answer
        (its F7, F11 and F32 checked to echo the request's)."""
        assert self._conn is not None, "the centre has not connected"
        self.stan += 1
        request = {7: gmt_now(), 11: f"{900000 + self.stan:06d}", 32: self.bank_id, **fields}
        payload = (sealed(self.dialect, self.zak, mti, request) if mac
                   else encode(self.dialect, mti, request))
        with self._lock:
            self._conn.sendall(frame(self.dialect, payload))
        reply = self.responses.get(timeout=REPLY_S)
        assert reply.mti == f"{int(mti) // 10 * 10 + 10:04d}", reply.mti
        for n in (7, 11, 32):
            assert reply.fields.get(n) == request[n], f"F{n} not echoed"
        return reply

    def echo(self) -> Msg:
        """The bank's own echo on the centre's outbound connection."""
        return self.request("0800", {70: "301"})

    def next_request(self, mti_prefix: str, timeout_s: float = REPLY_S) -> Msg:
        """The next request the centre sent whose MTI starts with ``mti_prefix``."""
        for _ in range(int(timeout_s / 0.5) + 1):
            try:
                msg = self.requests.get(timeout=0.5)
            except queue.Empty:
                continue
            if msg.mti.startswith(mti_prefix):
                return msg
        raise AssertionError(f"no {mti_prefix}xx request from the centre")

    def close(self) -> None:
        self.server.close()
        if self._conn is not None:
            self._conn.close()

"""Payout and cardholder refund files (specs/dayend-files.md): fixed-width GB18030 lines, a header,
one line per payment, a trailer with the count, the total and an X9.19 MAC under the bank's file
key (through the HSM port). A payout file names institutions and their settlement accounts, never
a card number; a refund file names cardholders and the card their savings account is linked to,
so it is encrypted as well, under the same file key.

The layout is pure (:func:`render`, :func:`split`); sealing and checking await the HSM.

>>> f = PayoutFile(PAYOUT, "2026-11-25", "b1", INSURANCE, (
...     PayoutLine("20261125-I-h1", "h1", "6200000001", "第1医院", 12345),))
>>> body = render(f)
>>> [len(line) for line in body.split(b"\\n")[:2]]
[220, 220]
>>> body.split(b"\\n")[2][:27].decode()
'T00000001000000000000012345'
>>> file_name(f)
'PAYOUT_20261125_b1_INS.txt'
"""

from __future__ import annotations

from dataclasses import dataclass

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef

ENCODING = "gb18030"
LINE_BYTES = 220  # every line, before its LF
VERSION = "01"
PAYOUT = "PAYOUT"  # institutions' payables
REFUND = "REFUND"  # cardholders' refunds payable, to their savings accounts (encrypted)
INSURANCE = "insurance"  # paid from the fund bank account
EP = "ep"  # paid from the EP float
FORMATS = {PAYOUT: "MSPAYOUT", REFUND: "MSREFUND"}
SOURCES = {INSURANCE: "INS", EP: "EP"}
MAC_INPUT_TRAILER_BYTES = 27  # "T" + count (8) + total (18): the MAC covers them too

# (name, width) of each line kind's fields, in order; widths in bytes.
HEADER = (("type", 1), ("format", 8), ("version", 2), ("date", 8), ("bank", 32), ("source", 10))
DETAIL = (
    ("type", 1),
    ("line", 6),
    ("payout_id", 48),
    ("payee_id", 32),
    ("account_no", 40),
    ("account_name", 60),
    ("amount_fen", 15),
    ("currency", 3),
)
TRAILER = (("type", 1), ("count", 8), ("total_fen", 18), ("mac", 16))


class PayoutFileError(ValueError):
    """A payout or refund file that does not check; the message says what."""


@dataclass(frozen=True, slots=True)
class PayoutLine:
    payout_id: str  # the payment's reference, returned by the bank's return file
    payee_id: str  # institution id, or cardholder id in a refund file
    account_no: str
    account_name: str
    amount_fen: int


@dataclass(frozen=True, slots=True)
class PayoutFile:
    kind: str  # PAYOUT | REFUND
    business_date: str  # yyyy-mm-dd
    bank_id: str
    source: str  # INSURANCE | EP
    lines: tuple[PayoutLine, ...]

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """A file whose trailer and MAC checked, with its MAC (hex) and its plain text's bytes."""

    file: PayoutFile
    mac: str
    plain: bytes


def file_name(f: PayoutFile) -> str:
    """PAYOUT_yyyymmdd_<bank>_INS|EP.txt, REFUND_yyyymmdd_<bank>_EP.enc."""
    suffix = "enc" if f.kind == REFUND else "txt"
    return f"{f.kind}_{f.business_date.replace('-', '')}_{f.bank_id}_{SOURCES[f.source]}.{suffix}"


def _field(value: str, width: int, name: str, *, digits: bool = False) -> bytes:
    raw = value.encode(ENCODING)
    if digits:
        if not value.isdigit() or len(raw) > width:
            raise PayoutFileError(f"{name} {value!r} does not fit {width} digits")
        return raw.rjust(width, b"0")
    if len(raw) > width:
        if name != "account_name":
            raise PayoutFileError(f"{name} {value!r} is longer than {width} bytes")
        raw = _cut(value, width)
    if b"\n" in raw:
        raise PayoutFileError(f"{name} holds a line break")
    return raw.ljust(width, b" ")


def _cut(text: str, width: int) -> bytes:
    """The longest prefix of `text` that fits `width` bytes, never half a character."""
    out = b""
    for char in text:
        raw = char.encode(ENCODING)
        if len(out) + len(raw) > width:
            break
        out += raw
    return out


def _line(fields: tuple[tuple[str, int], ...], values: dict[str, str], digits: set[str]) -> bytes:
    raw = b"".join(_field(values[n], w, n, digits=n in digits) for n, w in fields)
    return raw.ljust(LINE_BYTES, b" ") + b"\n"


def render(f: PayoutFile) -> bytes:
    """Header, details and the trailer up to (not including) its MAC: the MAC's input."""
    if f.kind not in FORMATS or f.source not in SOURCES:
        raise PayoutFileError(f"unknown file kind {f.kind!r} or source {f.source!r}")
    if f.kind == REFUND and f.source != EP:
        raise PayoutFileError("refunds are EP money")
    date = f.business_date.replace("-", "")
    out = [
        _line(
            HEADER,
            {
                "type": "H",
                "format": FORMATS[f.kind],
                "version": VERSION,
                "date": date,
                "bank": f.bank_id,
                "source": f.source.upper(),
            },
            set(),
        )
    ]
    for number, p in enumerate(f.lines, 1):
        if p.amount_fen <= 0:
            raise PayoutFileError(f"line {number}: an amount must be positive")
        values = {
            "type": "D",
            "line": str(number),
            "payout_id": p.payout_id,
            "payee_id": p.payee_id,
            "account_no": p.account_no,
            "account_name": p.account_name,
            "amount_fen": str(p.amount_fen),
            "currency": "CNY",
        }
        out.append(_line(DETAIL, values, {"line", "amount_fen"}))
    out.append(
        b"T"
        + _field(str(len(f.lines)), 8, "count", digits=True)
        + _field(str(f.total_fen), 18, "total", digits=True)
    )
    return b"".join(out)


def _finish(mac_input: bytes, mac: bytes) -> bytes:
    trailer = mac_input[mac_input.rindex(b"\n") + 1 :] + mac.hex().upper().encode()
    return (
        mac_input[: len(mac_input) - MAC_INPUT_TRAILER_BYTES]
        + trailer.ljust(LINE_BYTES, b" ")
        + b"\n"
    )


async def build(hsm: Hsm, file_key: KeyRef, f: PayoutFile) -> tuple[bytes, str]:
    """The file's bytes as written (a refund file encrypted) and its MAC in hex."""
    mac_input = render(f)
    mac = await hsm.generate_mac(file_key, MacAlgorithm.X9_19, mac_input)
    plain = _finish(mac_input, mac)
    if f.kind == REFUND:
        return await hsm.encrypt_data(file_key, plain), mac.hex().upper()
    return plain, mac.hex().upper()


def is_plain(data: bytes) -> bool:
    """Whether `data` starts like a plain file (a refund file as written is ciphertext)."""
    return data[:1] == b"H" and data[1:9].decode("ascii", "replace") in FORMATS.values()


def header_bank(data: bytes) -> str | None:
    """The bank id in a plain file's header (None for ciphertext): which file key to use."""
    if not is_plain(data):
        return None
    return data[19:51].decode(ENCODING, "replace").rstrip()


def _fields(line: bytes, fields: tuple[tuple[str, int], ...]) -> dict[str, str]:
    values, at = {}, 0
    for name, width in fields:
        try:
            values[name] = line[at : at + width].decode(ENCODING).rstrip(" ")
        except UnicodeDecodeError:
            raise PayoutFileError(f"{name} is not {ENCODING} text") from None
        at += width
    return values


def split(plain: bytes) -> tuple[PayoutFile, str, bytes]:
    """(file, MAC hex, MAC input) of a plain file; trailer count and total checked."""
    if not plain.endswith(b"\n"):
        raise PayoutFileError("the file does not end with a line break (truncated?)")
    lines = plain[:-1].split(b"\n")
    if len(lines) < 2 or any(len(line) != LINE_BYTES for line in lines):
        raise PayoutFileError(f"every line must be {LINE_BYTES} bytes (a header and a trailer)")
    head = _fields(lines[0], HEADER)
    kind = {v: k for k, v in FORMATS.items()}.get(head["format"])
    if head["type"] != "H" or kind is None or head["version"] != VERSION:
        raise PayoutFileError("not a payout or refund file (header)")
    source = head["source"].lower()
    if source not in SOURCES or len(head["date"]) != 8 or not head["date"].isdigit():
        raise PayoutFileError("the header's source or date is malformed")
    tail = _fields(lines[-1], TRAILER)
    if tail["type"] != "T" or not (tail["count"].isdigit() and tail["total_fen"].isdigit()):
        raise PayoutFileError("no trailer")
    details = [_detail(number, line) for number, line in enumerate(lines[1:-1], 1)]
    if int(tail["count"]) != len(details):
        raise PayoutFileError(
            f"the trailer counts {int(tail['count'])} payments, the file holds {len(details)}"
        )
    total = sum(p.amount_fen for p in details)
    if int(tail["total_fen"]) != total:
        raise PayoutFileError(
            f"the trailer's total {int(tail['total_fen'])} fen differs from the lines' {total}"
        )
    d = head["date"]
    f = PayoutFile(kind, f"{d[:4]}-{d[4:6]}-{d[6:]}", head["bank"], source, tuple(details))
    mac_input = plain[: len(plain) - LINE_BYTES - 1] + lines[-1][:MAC_INPUT_TRAILER_BYTES]
    return f, tail["mac"], mac_input


def _detail(number: int, line: bytes) -> PayoutLine:
    v = _fields(line, DETAIL)
    if v["type"] != "D" or v["line"] != f"{number:06d}":
        raise PayoutFileError(f"line {number}: not the payment line expected there")
    if not v["amount_fen"].isdigit() or int(v["amount_fen"]) <= 0 or v["currency"] != "CNY":
        raise PayoutFileError(f"line {number}: malformed amount or currency")
    return PayoutLine(
        v["payout_id"], v["payee_id"], v["account_no"], v["account_name"], int(v["amount_fen"])
    )


async def parse(hsm: Hsm, file_key: KeyRef, data: bytes) -> CheckedFile:
    """Decrypt (a refund file) and check a file: layout, trailer count and total, then the MAC;
    PayoutFileError for anything that does not check."""
    plain = data
    if is_plain(data) and data[1:9] == FORMATS[REFUND].encode():
        raise PayoutFileError("a refund file must be encrypted (it names cardholders)")
    if not is_plain(data):
        try:
            plain = await hsm.decrypt_data(file_key, data)
        except ValueError:
            raise PayoutFileError(
                "the file is neither a plain payout file nor decrypts under this file key"
            ) from None
        if plain[:9] != b"H" + FORMATS[REFUND].encode():
            raise PayoutFileError("the file does not decrypt under this file key to a refund file")
    f, mac_hex, mac_input = split(plain)
    try:
        mac = bytes.fromhex(mac_hex)
    except ValueError:
        raise PayoutFileError("the trailer's MAC is not hex") from None
    if len(mac) != 8 or not await hsm.verify_mac(file_key, MacAlgorithm.X9_19, mac_input, mac):
        raise PayoutFileError(
            "the file's MAC does not verify under the bank's file key (altered, or another key)"
        )
    return CheckedFile(f, mac_hex, plain)

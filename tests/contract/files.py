"""A bank's, an employer's and the agency's side of the file interfaces, written from
specs/dayend-files.md, specs/ledger-files.md and specs/medical-files.md alone: the file keys (from
clear components, under a ZMK), the X9.19 MAC, the file encryption, the 220-byte fixed-width
records of payout, refund, return and statement files, the `|`-separated record files, the
specs' worked examples and the party statements' CSV layout.
Imports nothing of medswitch (only the standard library and `cryptography`)."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from tests.contract.wire import TripleDES, tdes_ecb

ENCODING = "gb18030"  # dayend-files: "Encoding: GB18030"
LINE = 220  # every fixed-width line, before its LF
VARIANT = 0xF0  # "File keys": the encryption variant K xor F0..F0


# -- keys (dayend-files "File keys") ---------------------------------------------------------


def odd_parity(key: bytes) -> bytes:
    return bytes(b ^ 1 if bin(b).count("1") % 2 == 0 else b for b in key)


def from_components(*hex_parts: str) -> bytes:
    """A key from clear components: XOR, then every byte forced to odd parity."""
    key = bytes(16)
    for part in hex_parts:
        key = bytes(a ^ b for a, b in zip(key, bytes.fromhex(part), strict=True))
    return odd_parity(key)


def kcv(key: bytes) -> str:
    """The key check value: the first 3 bytes of 3DES(K, 00×8), upper-case hex."""
    return tdes_ecb(key, bytes(8))[:3].hex().upper()


def unwrap(zmk: bytes, under_zmk_hex: str, check: str) -> bytes:
    """A key received under a ZMK: 3DES-ECB decrypt, checked against its KCV."""
    key = tdes_ecb(zmk, bytes.fromhex(under_zmk_hex), decrypt=True)
    assert kcv(key) == check.upper(), "the key does not match its check value"
    return key


def wrap(zmk: bytes, key: bytes) -> str:
    return tdes_ecb(zmk, key).hex().upper()


# -- MAC and encryption ----------------------------------------------------------------------


def x919(key: bytes, data: bytes) -> str:
    """ISO 9797-1 MAC algorithm 3, padding method 1 (zeros; none when already aligned)."""
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    state = bytes(8)
    for at in range(0, len(padded), 8):
        block = bytes(a ^ b for a, b in zip(state, padded[at : at + 8], strict=True))
        state = tdes_ecb(key[:8] * 2, block)
    state = tdes_ecb(key[8:] * 2, state, decrypt=True)
    return tdes_ecb(key[:8] * 2, state).hex().upper()


def _cbc(key: bytes, data: bytes, decrypt: bool) -> bytes:
    variant = bytes(b ^ VARIANT for b in key)
    cipher = Cipher(TripleDES(variant + variant[:8]), modes.CBC(bytes(8)))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def encrypt(key: bytes, plain: bytes) -> bytes:
    """3DES-CBC, zero IV, ISO 9797-1 padding method 2, under the key's encryption variant."""
    padded = plain + b"\x80" + bytes((-len(plain) - 1) % 8)
    return _cbc(key, padded, decrypt=False)


def decrypt(key: bytes, data: bytes) -> bytes:
    padded = _cbc(key, data, decrypt=True)
    plain = padded.rstrip(b"\0")
    assert plain.endswith(b"\x80"), "padding method 2 does not check"
    return plain[:-1]


# -- fixed-width 220-byte files (dayend-files) -----------------------------------------------

Layout = tuple[tuple[str, int], ...]  # (field, width in bytes); numbers are named `n:…`

PAYOUT_HEADER: Layout = (("type", 1), ("format", 8), ("version", 2), ("date", 8), ("bank", 32),
                         ("source", 10))
PAYOUT_DETAIL: Layout = (("type", 1), ("n:line", 6), ("payout_id", 48), ("payee_id", 32),
                         ("account_no", 40), ("account_name", 60), ("n:amount", 15),
                         ("currency", 3))
PAYOUT_TRAILER: Layout = (("type", 1), ("n:count", 8), ("n:total", 18), ("mac", 16))
RETURN_HEADER: Layout = (("type", 1), ("format", 8), ("version", 2), ("date", 8), ("bank", 32),
                         ("payout_file", 60), ("payout_mac", 16))
RETURN_DETAIL: Layout = (("type", 1), ("n:line", 6), ("n:payout_line", 6), ("payout_id", 48),
                         ("payee_id", 32), ("account_no", 40), ("n:amount", 15),
                         ("currency", 3), ("status", 1), ("reason_code", 4), ("reason", 40))
RETURN_TRAILER: Layout = (("type", 1), ("n:count", 8), ("n:total", 18), ("n:paid", 8),
                          ("n:paid_total", 18), ("n:returned", 8), ("n:returned_total", 18),
                          ("mac", 16))
STMT_HEADER: Layout = (("type", 1), ("format", 8), ("version", 2), ("date", 8), ("bank", 32),
                       ("account", 10), ("statement_id", 32))
STMT_DETAIL: Layout = (("type", 1), ("n:line", 6), ("ref", 32), ("kind", 16), ("direction", 1),
                       ("n:amount", 15), ("currency", 3), ("counterparty", 48), ("text", 60))
STMT_TRAILER: Layout = (("type", 1), ("n:count", 8), ("n:credits", 18), ("n:debits", 18),
                        ("mac", 16))


def line(layout: Layout, values: dict[str, object]) -> bytes:
    """One 220-byte line and its LF: text left-justified with spaces, numbers zero-filled."""
    out = b""
    for name, width in layout:
        raw = str(values.get(name.removeprefix("n:"), "")).encode(ENCODING)
        assert len(raw) <= width, (name, raw)
        out += raw.rjust(width, b"0") if name.startswith("n:") else raw.ljust(width, b" ")
    return out.ljust(LINE, b" ") + b"\n"


def fields(layout: Layout, raw: bytes) -> dict[str, str]:
    values, at = {}, 0
    for name, width in layout:
        values[name.removeprefix("n:")] = raw[at : at + width].decode(ENCODING).rstrip(" ")
        at += width
    return values


def sealed(key: bytes, header: bytes, details: list[bytes], trailer: bytes) -> bytes:
    """The file with its MAC: X9.19 over the header and details (with LFs) and the trailer up to
    its MAC field, which `trailer` is (the MAC then fills the next 16 bytes)."""
    mac = x919(key, header + b"".join(details) + trailer)
    return header + b"".join(details) + (trailer + mac.encode()).ljust(LINE, b" ") + b"\n"


@dataclass(frozen=True)
class Fixed:
    header: dict[str, str]
    details: list[dict[str, str]]
    trailer: dict[str, str]


def read_fixed(key: bytes, data: bytes, layouts: tuple[Layout, Layout, Layout]) -> Fixed:
    """Parse a fixed-width file and check what the spec says a reader checks: every line 220
    bytes + LF, the trailer's count and the MAC (over everything before the MAC field)."""
    lines = data.split(b"\n")
    assert lines.pop() == b"", "the file ends with LF"
    assert all(len(x) == LINE for x in lines), "every line is 220 bytes"
    head, tail = fields(layouts[0], lines[0]), fields(layouts[2], lines[-1])
    assert head["type"] == "H" and tail["type"] == "T"
    details = [fields(layouts[1], x) for x in lines[1:-1]]
    assert int(tail["count"]) == len(details)
    mac_at = sum(w for _, w in layouts[2][:-1])
    assert x919(key, data[: -LINE - 1] + lines[-1][:mac_at]) == tail["mac"], "MAC"
    return Fixed(head, details, tail)


def masked(card_no: str) -> str:
    """A refund's account number in a return file: the first 6 and last 4 digits with `*`
    between (all `*` when shorter than 11)."""
    if len(card_no) < 11:
        return "*" * len(card_no)
    return card_no[:6] + "*" * (len(card_no) - 10) + card_no[-4:]


def return_file(key: bytes, bank: str, day: str, payout_name: str, payout: Fixed,
                accounts: dict[str, str]) -> bytes:
    """The bank's return file (every payment paid) for a payout or refund file; `accounts`:
    payout id → the account number to write (else the payout file's)."""
    details, total = [], 0
    for n, d in enumerate(payout.details, 1):
        total += int(d["amount"])
        details.append(line(RETURN_DETAIL, {
            "type": "D", "line": n, "payout_line": d["line"], "payout_id": d["payout_id"],
            "payee_id": d["payee_id"], "account_no": accounts.get(d["payout_id"], d["account_no"]),
            "amount": int(d["amount"]), "currency": "CNY", "status": "P"}))
    head = line(RETURN_HEADER, {"type": "H", "format": "MSRETURN", "version": "01", "date": day,
                                "bank": bank, "payout_file": payout_name,
                                "payout_mac": payout.trailer["mac"]})
    trailer = f"T{len(details):08d}{total:018d}{len(details):08d}{total:018d}{0:08d}{0:018d}"
    return sealed(key, head, details, trailer.encode())


# -- record files (medical-files §1, ledger-files §1) ----------------------------------------


def record_file(key: bytes, records: list[str]) -> bytes:
    """`records` (header, details, trailer) with LFs, then `M|<MAC>`."""
    body = "".join(r + "\n" for r in records).encode()
    return body + f"M|{x919(key, body)}\n".encode()


def read_record_file(key: bytes, data: bytes) -> list[list[str]]:
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    assert last.startswith(b"M|") and x919(key, body + b"\n") == last[2:].decode(), "MAC"
    return [r.split("|") for r in body.decode().split("\n")]


def holder_data(key: bytes, file_id: str, holder_id: str, id_number: str, name: str) -> str:
    """ledger-files §3: BLAKE2b-64 block of "<file id>|<cardholder id>", then the UTF-8 data,
    encrypted like a file under the same key; upper-case hex."""
    block = hashlib.blake2b(f"{file_id}|{holder_id}".encode(), digest_size=8,
                            person=b"medsw-holders").digest()
    return encrypt(key, block + f"{id_number}|{name}".encode()).hex().upper()


# -- the specs' worked examples ----------------------------------------------------------------

SPECS = Path(__file__).resolve().parents[2] / "specs"
_EXAMPLE = re.compile(r"<!-- example: ([a-z-]+) -->\n```[a-z]*\n(.*?)```\n", re.S)


def examples(spec: str) -> dict[str, str]:
    """NAME → the text of the fenced block after `<!-- example: NAME -->` in specs/SPEC."""
    return dict(_EXAMPLE.findall((SPECS / spec).read_text(encoding="utf-8")))


def padded(text: str) -> bytes:
    """A fixed-width file as the spec shows it (trailing spaces removed), as bytes."""
    return b"".join(x.encode(ENCODING).ljust(LINE, b" ") + b"\n" for x in text.splitlines())


# -- party statements (dayend-files "Party statements") ----------------------------------------


def party_statement(text: str) -> dict[str, list[list[str]]]:
    """The CSV as the spec lays it out: a first row, then per section an empty row, a
    `section,<title>[,<note>]` row, a header row and the rows. Title → header and rows."""
    rows = list(csv.reader(io.StringIO(text)))
    sections, title = {"statement": [rows[0]]}, ""
    for before, row in itertools.pairwise(rows):
        if row and row[0] == "section" and before == []:
            title = row[1]
            sections[title] = []
        elif row:
            sections[title].append(row)
    return sections

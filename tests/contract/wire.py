"""A terminal's side of specs/terminal-interface.md, written from the spec alone: the frame, the
field table as a pyiso8583 specification, the TLVs of fields 58/63, the CUP-ECB MAC of field 64,
field 63's cipher and the sign-on key block of field 62. Imports nothing of medswitch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import iso8583
from cryptography.hazmat.primitives.ciphers import Cipher, modes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore


# -- field table (spec: "Field encodings") ---------------------------------------------------


def _n(digits: int, *, left_aligned: bool = False) -> dict[str, Any]:
    """Fixed numeric, packed BCD; odd lengths right-aligned (field 22: left-aligned)."""
    pad = {"right_pad": "0"} if left_aligned else {"left_pad": "0"}
    return {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": digits,
            "len_count": "nibbles", **pad}


def _nvar(digits: int, prefix_bytes: int) -> dict[str, Any]:
    """LL/LLL numeric: BCD length counting digits, value left-aligned (trailing 0 nibble)."""
    return {"data_enc": "b", "len_enc": "bcd", "len_type": prefix_bytes, "max_len": digits,
            "len_count": "nibbles", "right_pad": "0"}


def _text(length: int) -> dict[str, Any]:
    return {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": length}


def _textvar(length: int, prefix_bytes: int) -> dict[str, Any]:
    return {"data_enc": "ascii", "len_enc": "bcd", "len_type": prefix_bytes, "max_len": length}


def _binary(length: int) -> dict[str, Any]:
    return {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": length}


def _binvar(length: int, prefix_bytes: int) -> dict[str, Any]:
    return {"data_enc": "b", "len_enc": "bcd", "len_type": prefix_bytes, "max_len": length}


SPEC: dict[str, dict[str, Any]] = {
    "h": _binary(11),  # TPDU (5) + header (6)
    "t": _binary(2),  # MTI, 4 BCD digits
    "p": _binary(8),
    "1": _binary(8),
    "2": _nvar(19, 1), "3": _n(6), "4": _n(12), "11": _n(6), "12": _n(6), "13": _n(4),
    "14": _n(4), "15": _n(4), "22": _n(3, left_aligned=True), "23": _n(3), "25": _n(2),
    "26": _n(2), "32": _nvar(11, 1), "35": _nvar(37, 1), "36": _nvar(104, 2),
    "37": _text(12), "38": _text(6), "39": _text(2), "41": _text(8), "42": _text(15),
    "44": _textvar(25, 1), "48": _nvar(322, 2), "49": _text(3), "52": _binary(8),
    "53": _n(16), "54": _textvar(120, 2), "55": _binvar(255, 2), "58": _binvar(255, 2),
    "60": _nvar(32, 2), "61": _nvar(29, 2), "62": _binvar(512, 2), "63": _binvar(512, 2),
    "64": _text(8),  # the MAC: 8 hex characters as ASCII
}
for _number in range(2, 65):  # fields the table does not define: never sent
    SPEC.setdefault(str(_number), _binary(0))

TPDU = "6000030000"
HEADER = "613100310000"


def encode(mti: str, fields: dict[int, str], mak: bytes | None) -> bytes:
    """The frame: 2-byte length, TPDU, header, MTI, bitmap, fields; F64 under `mak` when given."""
    doc: dict[str, Any] = {"h": TPDU + HEADER, "t": mti}
    doc |= {str(k): v for k, v in fields.items()}
    if mak is not None:
        doc["64"] = "00000000"
        raw, _ = iso8583.encode(doc, SPEC)
        doc["64"] = mac(mak, bytes(raw[11:-8]))
    raw, _ = iso8583.encode(doc, SPEC)
    return len(raw).to_bytes(2, "big") + bytes(raw)


@dataclass(frozen=True, slots=True)
class Frame:
    mti: str
    fields: dict[int, str]
    raw: bytes  # without the length prefix

    def mac_block(self) -> bytes:
        """Spec: every byte from the MTI through the last field before 64."""
        return self.raw[11:-8] if 64 in self.fields else self.raw[11:]


def decode(frame: bytes) -> Frame:
    length = int.from_bytes(frame[:2], "big")
    raw = frame[2 : 2 + length]
    assert len(raw) == length, "truncated frame"
    doc, _ = iso8583.decode(raw, SPEC)
    fields = {int(k): v for k, v in doc.items() if k.isdigit() and k != "1"}
    assert "1" not in doc, "a secondary bitmap is a format error"
    return Frame(doc["t"], fields, bytes(raw))


def check_mac(frame: Frame, mak: bytes) -> None:
    assert 64 in frame.fields, f"{frame.mti} reply without field 64"
    assert frame.fields[64] == mac(mak, frame.mac_block()), f"{frame.mti}: field 64 is wrong"


# -- cryptography ------------------------------------------------------------------------


def _k1k2k1(key: bytes) -> bytes:
    """An 8- or 16-byte DES key as the 24 bytes of 3DES EDE (K1 K2 K1)."""
    key = key * 2 if len(key) == 8 else key
    return key + key[:8]


def tdes_ecb(key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(_k1k2k1(key)), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def des(key8: bytes, block: bytes) -> bytes:
    return tdes_ecb(key8 * 2, block)


def check_value(key: bytes) -> bytes:
    """Spec §62: first 4 bytes of E(key, 00×8)."""
    return tdes_ecb(key, bytes(8))[:4]


def mac(mak: bytes, block: bytes) -> str:
    """Spec §MAC (CUP-ECB): zero-pad, XOR the blocks, hex, DES(H1) XOR H2, DES, 8 hex chars."""
    padded = block + bytes(-len(block) % 8)
    r = bytes(8)
    for i in range(0, len(padded), 8):
        r = bytes(a ^ b for a, b in zip(r, padded[i : i + 8], strict=True))
    h = r.hex().upper().encode()
    e1 = des(mak[:8], h[:8])
    e2 = des(mak[:8], bytes(a ^ b for a, b in zip(e1, h[8:], strict=True)))
    return e2.hex().upper()[:8]


def pad_method_2(data: bytes) -> bytes:
    return data + b"\x80" + bytes((-len(data) - 1) % 8)


def encrypt_63(tdk: bytes, plain: bytes) -> str:
    encryptor = Cipher(TripleDES(_k1k2k1(tdk)), modes.CBC(bytes(8))).encryptor()
    return (encryptor.update(pad_method_2(plain)) + encryptor.finalize()).hex().upper()


def decrypt_63(tdk: bytes, field: str) -> bytes:
    decryptor = Cipher(TripleDES(_k1k2k1(tdk)), modes.CBC(bytes(8))).decryptor()
    padded = decryptor.update(bytes.fromhex(field)) + decryptor.finalize()
    body = padded.rstrip(b"\x00")
    assert body.endswith(b"\x80"), "field 63 padding is not method 2"
    return body[:-1]


@dataclass(frozen=True, slots=True)
class WorkingKeys:
    pik: bytes
    mak: bytes
    tdk: bytes


def sign_on_keys(tmk: bytes, field62: str) -> WorkingKeys:
    """Spec §62, 60.3 = 004: PIK(16) CV(4) MAK(8) 00×8 CV(4) TDK(16) CV(4); checks every CV."""
    data = bytes.fromhex(field62)
    assert len(data) == 60, f"a 004 sign-on gives 60 bytes of keys, not {len(data)}"
    pik = tdes_ecb(tmk, data[0:16], decrypt=True)
    mak = tdes_ecb(tmk, data[20:28], decrypt=True)
    tdk = tdes_ecb(tmk, data[40:56], decrypt=True)
    assert data[28:36] == bytes(8)
    assert check_value(pik) == data[16:20], "PIK check value"
    assert check_value(mak) == data[36:40], "MAK check value"
    assert check_value(tdk) == data[56:60], "TDK check value"
    return WorkingKeys(pik, mak, tdk)


# -- TLV (fields 58 and 63) ----------------------------------------------------------------


def tlv(elements: dict[int, bytes]) -> str:
    out = b""
    for tag in sorted(elements):
        value = elements[tag]
        out += bytes([tag, len(value)]) + value
    return out.hex().upper()


def parse_tlv(data: bytes) -> dict[int, bytes]:
    """Tag → value; a chained element (a value over 255 bytes in consecutive elements of its
    tag, 255 bytes each but the last) joined, as the spec's "Field 58" says."""
    out: dict[int, bytes] = {}
    i, joins = 0, -1  # joins: the tag whose 255-byte element ended at i, which may continue
    while i < len(data):
        tag, length = data[i], data[i + 1]
        value = data[i + 2 : i + 2 + length]
        assert len(value) == length, f"TLV tag {tag:02X} truncated"
        assert tag not in out or tag == joins, f"TLV tag {tag:02X} repeated"
        out[tag] = out.get(tag, b"") + value
        joins = tag if length == 255 else -1
        i += 2 + length
    return out


def uint(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")

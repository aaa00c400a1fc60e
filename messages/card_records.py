"""The card's medical record book (specs/card-layout.md): the health data file EF 0019 and a
record of the cyclic visit file EF 001A, as bytes and as typed values. Pure: the virtual card,
the POS, the centre and the spec's tests all read and write these layouts through here.

>>> visit = Visit("20261207", "H001", "IM", ("J45.9", "I10"), "9054CA9CBE34A38E",
...               12000, 3000, 8000, 1000)
>>> Visit.decode(visit.encode()) == visit
True
>>> len(visit.encode()) == VISIT_RECORD_BYTES
True
>>> health = HealthData("AB-", ("PCN",), ("PM",), "13800138000", DONOR_YES, ("E11",),
...                     "H001", "20261207093000")
>>> HealthData.decode(health.encode() + bytes(4)) == health
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes

EF_HEALTH = 0x19  # SFI and file id 0019
EF_VISITS = 0x1A  # SFI and file id 001A
HEALTH_BYTES = 96  # the file: 92 data bytes, then the 4-byte data check code
HEALTH_DATA_BYTES = 92
HEALTH_OPEN_BYTES = 48  # bytes 0-47 are readable without the PIN (the emergency block)
VISIT_RECORD_BYTES = 72
VISIT_RECORDS_MAX = 10
FILE_ENTRY_BYTES = 16  # card_visit_file: a record's bill id (8) and its digest (8)
FORMAT = 0x01
KEY_INDEX_RECORD = 0x02  # the record key DRK: card key type 36 (maintenance), index 02

DONOR_UNKNOWN, DONOR_YES, DONOR_NO = 0, 1, 2
DIAGNOSES_MAX = 4
CODE_BYTES = 6  # an ICD-10 code without its dot, space-padded
INSTITUTION_BYTES = 8
DEPARTMENT_BYTES = 8
BLOOD_TYPES = ("", "A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-")
_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,3})?$")
_TEXT = re.compile(r"^[\x21-\x7E]*$")  # printable ASCII without space


class RecordFormatError(ValueError):
    """A value that does not fit the card's layout (the message names the element)."""


def _text(value: str, size: int, what: str) -> bytes:
    raw = value.encode("ascii", "replace")
    if len(raw) > size or not _TEXT.match(value):
        raise RecordFormatError(f"{what}: at most {size} printable ASCII characters, no space")
    return raw.ljust(size, b" ")


def _untext(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip(" \0")


def _codes(values: tuple[str, ...], count: int, what: str) -> bytes:
    if len(values) > count:
        raise RecordFormatError(f"{what}: at most {count} ICD-10 codes")
    out = b""
    for code in values:
        if not _ICD10.match(code):
            raise RecordFormatError(f"{what}: {code!r} is not an ICD-10 code")
        out += code.replace(".", "").encode().ljust(CODE_BYTES, b" ")
    return out.ljust(count * CODE_BYTES, b" ")


def _uncodes(raw: bytes) -> tuple[str, ...]:
    found = []
    for i in range(0, len(raw), CODE_BYTES):
        code = _untext(raw[i : i + CODE_BYTES])
        if code:
            found.append(code if len(code) <= 3 else f"{code[:3]}.{code[3:]}")
    return tuple(found)


def _list(values: tuple[str, ...], size: int, what: str) -> bytes:
    return _text(",".join(values), size, what)


def _unlist(raw: bytes) -> tuple[str, ...]:
    text = _untext(raw)
    return tuple(text.split(",")) if text else ()


def _bcd(digits: str, size: int, what: str) -> bytes:
    if not digits.isdigit() or len(digits) != size * 2:
        raise RecordFormatError(f"{what}: {size * 2} digits")
    return bytes.fromhex(digits)


def _uint(value: int, what: str) -> bytes:
    if not 0 <= value < 1 << 32:
        raise RecordFormatError(f"{what}: 0 to 4294967295 fen")
    return value.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Visit:
    """One record of EF 001A: a settled visit as the centre wrote it."""

    date: str  # yyyymmdd
    institution_id: str
    department: str
    diagnoses: tuple[str, ...]  # ICD-10 codes, as written (with or without the dot)
    bill_id: str  # 16 hex digits
    total_fen: int
    personal_fen: int
    pooled_fen: int
    self_pay_fen: int

    def encode(self) -> bytes:
        try:
            bill = bytes.fromhex(self.bill_id)
        except ValueError:
            bill = b""
        if len(bill) != 8:
            raise RecordFormatError("bill_id: 16 hex digits")
        out = (
            bytes([FORMAT])
            + _bcd(self.date, 4, "date")
            + _text(self.institution_id, INSTITUTION_BYTES, "institution")
            + _text(self.department, DEPARTMENT_BYTES, "department")
            + _codes(self.diagnoses, DIAGNOSES_MAX, "diagnoses")
            + bill
            + _uint(self.total_fen, "total")
            + _uint(self.personal_fen, "personal share")
            + _uint(self.pooled_fen, "pooled share")
            + _uint(self.self_pay_fen, "self-pay share")
        )
        return out.ljust(VISIT_RECORD_BYTES, b"\0")

    @classmethod
    def decode(cls, raw: bytes) -> Visit:
        if len(raw) != VISIT_RECORD_BYTES or raw[0] != FORMAT:
            raise RecordFormatError("not a visit record of format 01")
        amounts = [int.from_bytes(raw[i : i + 4], "big") for i in range(53, 69, 4)]
        return cls(
            raw[1:5].hex(),
            _untext(raw[5:13]),
            _untext(raw[13:21]),
            _uncodes(raw[21:45]),
            raw[45:53].hex().upper(),
            *amounts,
        )

    def same_as(self, other: Visit) -> bool:
        """Equal as the card holds them (a code's dot is not stored)."""
        return self.encode() == other.encode()


class FileEntry(NamedTuple):
    """One record of the card's visit file as the POS reports it (field 63 ``card_visit_file``):
    the bill id the record names and the first 8 bytes of SHA-256 over its 72 bytes."""

    bill_id: str  # 16 hex digits, upper case
    digest: bytes  # 8 bytes

    @classmethod
    def of(cls, record: bytes) -> FileEntry:
        """The entry of a record as read (any 72 bytes: an unreadable record is reported too)."""
        if len(record) != VISIT_RECORD_BYTES:
            raise RecordFormatError("a visit record is 72 bytes")
        return cls(record[45:53].hex().upper(), record_digest(record))

    def encode(self) -> bytes:
        return bytes.fromhex(self.bill_id) + self.digest


def record_digest(record: bytes) -> bytes:
    """The first 8 bytes of SHA-256 over the record's 72 bytes."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(record)
    return digest.finalize()[:8]


def visit_file(records: list[bytes]) -> bytes:
    """``card_visit_file`` for the records read, record 1 (the newest) first."""
    return b"".join(FileEntry.of(record).encode() for record in records)


def parse_visit_file(value: bytes) -> tuple[FileEntry, ...]:
    """The entries of ``card_visit_file``, record 1 first; RecordFormatError unless 1 to 10
    entries of 16 bytes."""
    count, rest = divmod(len(value), FILE_ENTRY_BYTES)
    if rest or not 1 <= count <= VISIT_RECORDS_MAX:
        raise RecordFormatError("card_visit_file: 1 to 10 entries of 16 bytes")
    return tuple(
        FileEntry(value[i : i + 8].hex().upper(), value[i + 8 : i + FILE_ENTRY_BYTES])
        for i in range(0, len(value), FILE_ENTRY_BYTES)
    )


@dataclass(frozen=True, slots=True)
class HealthData:
    """EF 0019 without its data check code."""

    blood_type: str  # one of BLOOD_TYPES ("" unknown)
    allergies: tuple[str, ...]  # short codes, e.g. PCN (penicillin)
    implants: tuple[str, ...]  # short codes, e.g. PM (pacemaker)
    emergency_phone: str  # up to 16 digits
    donor: int  # DONOR_UNKNOWN | DONOR_YES | DONOR_NO
    chronic: tuple[str, ...]  # ICD-10 codes
    updated_by: str  # institution id
    updated_at: str  # yyyymmddhhmmss

    def encode(self) -> bytes:
        """The 92 data bytes (the centre appends the data check code)."""
        if self.blood_type not in BLOOD_TYPES:
            raise RecordFormatError(f"blood type: one of {', '.join(BLOOD_TYPES[1:])} or none")
        if self.donor not in (DONOR_UNKNOWN, DONOR_YES, DONOR_NO):
            raise RecordFormatError("donor: 0 unknown, 1 yes, 2 no")
        phone = self.emergency_phone
        if not (phone.isdigit() or phone == "") or len(phone) > 16:
            raise RecordFormatError("emergency phone: up to 16 digits")
        out = (
            bytes([FORMAT])
            + self.blood_type.encode().ljust(3, b" ")
            + bytes([self.donor])
            + bytes.fromhex(phone.ljust(16, "F"))
            + _list(self.allergies, 20, "allergies")
            + _list(self.implants, 15, "implants")
            + _codes(self.chronic, DIAGNOSES_MAX, "chronic conditions")
            + _text(self.updated_by, INSTITUTION_BYTES, "updated by")
            + _bcd(self.updated_at, 7, "updated at")
        )
        return out.ljust(HEALTH_DATA_BYTES, b"\0")

    @classmethod
    def decode(cls, raw: bytes) -> HealthData:
        """From the whole file (96 bytes) or its data bytes (92)."""
        if len(raw) not in (HEALTH_DATA_BYTES, HEALTH_BYTES) or raw[0] != FORMAT:
            raise RecordFormatError("not a health data file of format 01")
        return cls(
            _untext(raw[1:4]),
            _unlist(raw[13:33]),
            _unlist(raw[33:48]),
            raw[5:13].hex().upper().rstrip("F"),
            raw[4],
            _uncodes(raw[48:72]),
            _untext(raw[72:80]),
            raw[80:87].hex(),
        )


@dataclass(frozen=True, slots=True)
class Emergency:
    """What the first 48 bytes of EF 0019 tell anyone holding the card (no PIN)."""

    blood_type: str
    donor: int
    emergency_phone: str
    allergies: tuple[str, ...]
    implants: tuple[str, ...]

    @classmethod
    def decode(cls, raw: bytes) -> Emergency | None:
        """None for a file never written (format byte 00)."""
        if len(raw) < HEALTH_OPEN_BYTES or raw[0] != FORMAT:
            return None
        return cls(
            _untext(raw[1:4]),
            raw[4],
            raw[5:13].hex().upper().rstrip("F"),
            _unlist(raw[13:33]),
            _unlist(raw[33:48]),
        )


def append_visit_command(visit: Visit) -> bytes:
    """APPEND RECORD to EF 001A, line-protected: `04 E2 00 D0 4C record(72)` (the MAC's 4
    bytes are counted in Lc and appended by the HSM's script MAC)."""
    return append_record_command(visit.encode())


def append_record_command(record: bytes) -> bytes:
    """The same for a record as the centre kept it (72 bytes)."""
    if len(record) != VISIT_RECORD_BYTES:
        raise RecordFormatError(f"a visit record is {VISIT_RECORD_BYTES} bytes")
    return bytes([0x04, 0xE2, 0x00, EF_VISITS << 3, len(record) + 4]) + record


def update_health_command(data_and_code: bytes) -> bytes:
    """UPDATE BINARY of EF 0019 from offset 0, line-protected: `04 D6 99 00 64 data(96)`."""
    if len(data_and_code) != HEALTH_BYTES:
        raise RecordFormatError("health data: 92 bytes and a 4-byte data check code")
    return bytes([0x04, 0xD6, 0x80 | EF_HEALTH, 0x00, HEALTH_BYTES + 4]) + data_and_code


def read_visit_command(number: int) -> bytes:
    """READ RECORD n of EF 001A (1 = the newest)."""
    return bytes([0x00, 0xB2, number, (EF_VISITS << 3) | 0x04, VISIT_RECORD_BYTES])


def read_health_command(offset: int = 0, length: int = HEALTH_BYTES) -> bytes:
    return bytes([0x00, 0xB0, 0x80 | EF_HEALTH, offset, length & 0xFF])


def pack_script(commands: list[bytes]) -> bytes:
    """A centre script in one field 63 element (``health_script``): each command as its
    1-byte length then the command, in the order the card takes them."""
    if any(not 0 < len(c) <= 255 for c in commands):
        raise RecordFormatError("script: each command 1-255 bytes")
    return b"".join(bytes([len(c)]) + c for c in commands)


def unpack_script(value: bytes) -> list[bytes]:
    """:func:`pack_script`'s commands back; RecordFormatError when a length overruns."""
    commands, index = [], 0
    while index < len(value):
        size = value[index]
        command = value[index + 1 : index + 1 + size]
        if size == 0 or len(command) != size:
            raise RecordFormatError("script: a command's length overruns the element")
        commands.append(command)
        index += 1 + size
    return commands

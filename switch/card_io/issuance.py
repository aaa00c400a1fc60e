"""Card issuance files (DESIGN §3.6): the issuance records of cardholders without cards, grouped
into batch files — header, records, trailer with the record count and a MAC — encrypted under
a file key in the HSM, since they hold personal data; and from an opened batch the card print
file (face data) and the mag-stripe (track 2) file, encrypted the same way.

Byte-deterministic: the same cardholders, numbering, clock and key give the same bytes (3DES-CBC
with a zero IV, no random anywhere). A batch whose decryption, trailer, count or MAC does not
check is refused whole (`BatchError`).

Batch plaintext, UTF-8, one `|`-separated line each, `\\n`-terminated:

    H|MEDSWITCH-CARDS|1|<batch id>|<created yyyymmddhhmmss>|<maker>|<key version>
    D|<seq>|<card no>|<application serial>|<cardholder id>|<name>|<id no>|<expiry yymm>|<svc>
      [|<blood type>|<donor 0/1/2>|<emergency phone>|<allergies>|<implants>|<chronic ICD-10>
       |<updated by>|<updated at yyyymmddhhmmss>]
      [|<signing key version>|<holder signature, hex>|<health signature, hex, or empty>]
    T|<record count>|<X9.19 MAC, hex, of every byte before the T line, under the file key>

The eight fields in the first brackets (specs/key-ceremony.md, "Card issuance batch"): the
cardholder's health data for EF 0019, lists comma-separated; absent when there are none. The
three in the second: the centre's signatures (centre/CARD_SIGN, made at the batch's creation)
the personaliser writes into EF 001B; absent when the centre has no signing key.

>>> card_number("621098", 1)
'6210980000000014'
>>> record = IssuanceRecord(1, "6210980000000014", "3101000000000001", "P1", "张三",
...                         "110101199001011234", date(2031, 12, 31))
>>> record.track2
'6210980000000014=3112220000000000000'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef
from messages.card_records import HealthData, RecordFormatError

FORMAT = "MEDSWITCH-CARDS"
PRINT_FORMAT = "MEDSWITCH-CARD-PRINT"
TRACK_FORMAT = "MEDSWITCH-CARD-TRACK2"
VERSION = "1"
SERVICE_CODE = "220"  # IC card, issuer authorisation, PIN where the terminal can take one
CITY_CODE = "3101"


class BatchError(ValueError):
    """A batch (or its approval) that cannot be trusted: it is refused whole."""


def luhn_digit(digits: str) -> str:
    """The Luhn check digit to append to `digits`."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def card_number(bin_prefix: str, sequence: int) -> str:
    """A 16-digit PAN: BIN, the sequence zero-padded, the Luhn digit."""
    body = bin_prefix + f"{sequence:0{15 - len(bin_prefix)}d}"
    if len(body) != 15 or not body.isdigit():
        raise ValueError("BIN and sequence do not make a 15-digit body")
    return body + luhn_digit(body)


def application_serial(sequence: int, city_code: str = CITY_CODE) -> str:
    """8 bytes as 16 hex digits (the card's EF 0015 holds them right-aligned in 10)."""
    return f"{city_code}{sequence:012d}"


@dataclass(frozen=True, slots=True)
class IssuanceRecord:
    seq: int
    card_no: str
    application_serial: str
    cardholder_id: str
    name: str
    id_no: str
    expiry: date
    service_code: str = SERVICE_CODE
    health: HealthData | None = None  # written to EF 0019 at personalisation
    signed: BatchSignatures | None = None  # written to EF 001B at personalisation

    @property
    def serial_bytes(self) -> bytes:
        return bytes.fromhex(self.application_serial).rjust(10, b"\0")

    @property
    def track2(self) -> str:
        return f"{self.card_no}={self.expiry:%y%m}{self.service_code}{'0' * 12}"

    def encode(self) -> str:
        fields = (
            "D",
            str(self.seq),
            self.card_no,
            self.application_serial,
            self.cardholder_id,
            self.name,
            self.id_no,
            f"{self.expiry:%y%m}",
            self.service_code,
            *([] if self.health is None else health_fields(self.health)),
            *([] if self.signed is None else self.signed.fields()),
        )
        for value in fields:
            if "|" in value or "\n" in value:
                raise ValueError("a record field holds a separator")
        return "|".join(fields)

    @classmethod
    def decode(cls, line: str) -> IssuanceRecord:
        parts = line.split("|")
        with_health = 9 + len(HEALTH_FIELDS)
        if len(parts) not in (9, 12, with_health, with_health + 3) or parts[0] != "D":
            raise BatchError("malformed record")
        expiry = _month_end(parts[7])
        health = health_of_fields(parts[9:with_health]) if len(parts) >= with_health else None
        signed = None
        if len(parts) in (12, with_health + 3):
            signed = BatchSignatures.of_fields(parts[-3:], health is not None)
        return cls(int(parts[1]), parts[2], parts[3], parts[4], parts[5], parts[6], expiry,
                   parts[8], health, signed)


SIGNATURE_HEX = 512  # RSA-2048: 256 bytes


@dataclass(frozen=True, slots=True)
class BatchSignatures:
    """The centre's signatures over a card's holder file (EF 0016) and health data (EF 0019
    bytes 0-91; None when the card gets none), made by centre/CARD_SIGN of `version` when the
    batch was created (specs/card-layout.md, "Signatures")."""

    version: int
    holder: bytes
    health: bytes | None = None

    def fields(self) -> list[str]:
        health = "" if self.health is None else self.health.hex().upper()
        return [str(self.version), self.holder.hex().upper(), health]

    @classmethod
    def of_fields(cls, parts: list[str], with_health: bool) -> BatchSignatures:
        """The three batch fields; BatchError naming the one that does not fit."""
        version, holder, health = parts
        if not version.isdigit() or not 1 <= int(version) <= 255:
            raise BatchError("signing key version: 1 to 255")

        def signature(text: str, what: str) -> bytes:
            if len(text) != SIGNATURE_HEX or set(text) - set("0123456789ABCDEF"):
                raise BatchError(f"{what} signature: {SIGNATURE_HEX} upper-case hex digits")
            return bytes.fromhex(text)

        if with_health != bool(health):
            raise BatchError("health signature: given exactly when the card gets health data")
        return cls(int(version), signature(holder, "holder"),
                   signature(health, "health") if health else None)


HEALTH_FIELDS = ("blood type", "organ donor", "emergency phone", "allergies", "implants",
                 "chronic conditions", "updated by", "updated at")


def health_fields(health: HealthData) -> list[str]:
    """A record's health data as its eight batch fields."""
    return [health.blood_type, str(health.donor), health.emergency_phone,
            ",".join(health.allergies), ",".join(health.implants), ",".join(health.chronic),
            health.updated_by, health.updated_at]


def health_of_fields(parts: list[str]) -> HealthData:
    """The eight batch fields as health data; BatchError naming the field that does not fit."""
    blood, donor, phone, allergies, implants, chronic, by, at = parts
    if donor not in ("0", "1", "2"):
        raise BatchError("organ donor: 0 not recorded, 1 donor, 2 not a donor")

    def listed(text: str) -> tuple[str, ...]:
        return tuple(text.split(",")) if text else ()

    health = HealthData(blood, listed(allergies), listed(implants), phone, int(donor),
                        listed(chronic), by, at)
    try:
        health.encode()
    except RecordFormatError as error:
        raise BatchError(str(error)) from None
    return health


def card_files(record: IssuanceRecord, issued: date) -> tuple[bytes, bytes]:
    """EF 0015 (30 bytes) and EF 0016 (39 bytes) of a record. The name is GBK in 20 bytes;
    the 18-character ID number is packed as BCD (X as A) in the 16 ID bytes, F-padded."""
    public = (
        bytes.fromhex(CITY_CODE + "000000000000") + b"\x03\x01" + record.serial_bytes
        + bytes.fromhex(f"{issued:%Y%m%d}{record.expiry:%Y%m%d}") + b"\x00\x00"
    )
    name = record.name.encode("gbk", errors="replace")[:20].ljust(20, b"\x00")
    id_no = bytes.fromhex(record.id_no.upper().replace("X", "A").ljust(32, "F")[:32])
    holder = b"\x00\x00" + name + id_no + b"\x00"
    return public, holder


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    created: datetime
    maker: str
    key_version: int
    records: tuple[IssuanceRecord, ...]


def plan(
    holders: list[tuple[str, str, str]],
    *,
    first_sequence: int,
    bin_prefix: str,
    issued: date,
    years: int = 6,
) -> list[IssuanceRecord]:
    """Records for (cardholder id, name, id no) in cardholder id order, numbered on."""
    expiry = _month_end(f"{(issued.year + years) % 100:02d}{issued.month:02d}")
    records = []
    for offset, (holder_id, name, id_no) in enumerate(sorted(holders)):
        sequence = first_sequence + offset
        records.append(
            IssuanceRecord(
                sequence,
                card_number(bin_prefix, sequence),
                application_serial(sequence),
                holder_id,
                name,
                id_no,
                expiry,
            )
        )
    return records


def batches(records: list[IssuanceRecord], size: int) -> list[list[IssuanceRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


async def seal(hsm: Hsm, file_key: KeyRef, batch: Batch) -> bytes:
    """The encrypted batch file."""
    header = "|".join(
        ("H", FORMAT, VERSION, batch.batch_id, f"{batch.created:%Y%m%d%H%M%S}", batch.maker,
         str(batch.key_version))
    )
    body = "".join(line + "\n" for line in [header, *(r.encode() for r in batch.records)])
    return await _seal_text(hsm, file_key, body, len(batch.records))


async def open_batch(hsm: Hsm, file_key: KeyRef, data: bytes) -> Batch:
    """Decrypt and check a batch file; BatchError for anything that does not check."""
    lines = await _open_text(hsm, file_key, data)
    header = lines[0].split("|")
    if len(header) != 7 or header[:3] != ["H", FORMAT, VERSION]:
        raise BatchError("not a card issuance batch")
    try:
        created = datetime.strptime(header[4], "%Y%m%d%H%M%S")
        key_version = int(header[6])
    except ValueError as error:
        raise BatchError(f"malformed batch: line 1: {error}") from None
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append(IssuanceRecord.decode(line))
        except ValueError as error:  # BatchError among them
            raise BatchError(f"malformed batch: line {number}: {error}") from None
    return Batch(header[3], created, header[5], key_version, tuple(records))


PSAM_FORMAT = "MEDSWITCH-PSAMS"
PSAM_SERIAL_PREFIX = "3109"


@dataclass(frozen=True, slots=True)
class PsamRecord:
    """A PSAM to personalise: its serial (8 bytes as hex), the terminal number it will carry
    (12 digits, bound into every TAC it makes) and the terminal it is bound to."""

    seq: int
    serial: str
    terminal_no: str
    institution_id: str
    terminal_id: str

    @property
    def serial_bytes(self) -> bytes:
        return bytes.fromhex(self.serial).rjust(10, b"\0")

    def encode(self) -> str:
        fields = ("P", str(self.seq), self.serial, self.terminal_no, self.institution_id,
                  self.terminal_id)
        if any("|" in f or "\n" in f for f in fields):
            raise ValueError("a record field holds a separator")
        return "|".join(fields)

    @classmethod
    def decode(cls, line: str) -> PsamRecord:
        parts = line.split("|")
        if len(parts) != 6 or parts[0] != "P":
            raise BatchError("malformed PSAM record")
        return cls(int(parts[1]), parts[2], parts[3], parts[4], parts[5])


def plan_psams(terminals: list[tuple[str, str]], first_sequence: int) -> list[PsamRecord]:
    """PSAMs for (terminal id, institution id), in terminal id order."""
    return [
        PsamRecord(seq, f"{PSAM_SERIAL_PREFIX}{seq:012d}", f"{CITY_CODE}{seq:08d}", inst, term)
        for seq, (term, inst) in enumerate(sorted(terminals), start=first_sequence)
    ]


async def seal_psams(
    hsm: Hsm, file_key: KeyRef, batch_id: str, created: datetime, maker: str, key_version: int,
    records: list[PsamRecord],
) -> bytes:
    header = "|".join(("H", PSAM_FORMAT, VERSION, batch_id, f"{created:%Y%m%d%H%M%S}", maker,
                       str(key_version)))
    body = "".join(line + "\n" for line in [header, *(r.encode() for r in records)])
    return await _seal_text(hsm, file_key, body, len(records))


async def open_psams(
    hsm: Hsm, file_key: KeyRef, data: bytes
) -> tuple[str, str, int, list[PsamRecord]]:
    """(batch id, maker, key version, records) of a checked PSAM batch."""
    lines = await _open_text(hsm, file_key, data)
    header = lines[0].split("|")
    if len(header) != 7 or header[:3] != ["H", PSAM_FORMAT, VERSION]:
        raise BatchError("not a PSAM batch")
    try:
        return header[3], header[5], int(header[6]), [PsamRecord.decode(x) for x in lines[1:]]
    except ValueError as error:
        raise BatchError(f"malformed batch: {error}") from None


async def print_file(hsm: Hsm, file_key: KeyRef, batch: Batch) -> bytes:
    """Face data for the card printer: number in groups of four, name, expiry."""
    lines = [f"H|{PRINT_FORMAT}|{VERSION}|{batch.batch_id}"]
    for r in batch.records:
        grouped = " ".join(r.card_no[i : i + 4] for i in range(0, len(r.card_no), 4))
        lines.append(f"D|{r.seq}|{grouped}|{r.name}|{r.expiry:%m/%y}")
    body = "".join(line + "\n" for line in lines)
    return await _seal_text(hsm, file_key, body, len(batch.records))


async def track_file(hsm: Hsm, file_key: KeyRef, batch: Batch) -> bytes:
    """Track 2 data for the encoder."""
    lines = [f"H|{TRACK_FORMAT}|{VERSION}|{batch.batch_id}"]
    lines += [f"D|{r.seq}|;{r.track2}?" for r in batch.records]
    body = "".join(line + "\n" for line in lines)
    return await _seal_text(hsm, file_key, body, len(batch.records))


async def open_text(hsm: Hsm, file_key: KeyRef, data: bytes) -> list[str]:
    """Any of these files' lines (header, records), checked like a batch."""
    return await _open_text(hsm, file_key, data)


async def _seal_text(hsm: Hsm, file_key: KeyRef, body: str, count: int) -> bytes:
    raw = body.encode()
    mac = await hsm.generate_mac(file_key, MacAlgorithm.X9_19, raw)
    trailer = f"T|{count}|{mac.hex().upper()}\n".encode()
    return await hsm.encrypt_data(file_key, raw + trailer)


async def _open_text(hsm: Hsm, file_key: KeyRef, data: bytes) -> list[str]:
    try:
        raw = await hsm.decrypt_data(file_key, data)
        text = raw.decode()
    except (ValueError, UnicodeDecodeError):
        raise BatchError("the file does not decrypt under this file key") from None
    if not text.endswith("\n"):
        raise BatchError("no trailer")
    lines = text[:-1].split("\n")
    trailer = lines[-1].split("|")
    if len(trailer) != 3 or trailer[0] != "T" or not trailer[1].isdigit():
        raise BatchError("no trailer")
    if int(trailer[1]) != len(lines) - 2:
        raise BatchError("the trailer's count does not match the records")
    body = text[: len(text) - len(lines[-1]) - 1].encode()
    try:
        mac = bytes.fromhex(trailer[2])
    except ValueError:
        raise BatchError("the trailer's MAC is not hex") from None
    if len(mac) != 8 or not await hsm.verify_mac(file_key, MacAlgorithm.X9_19, body, mac):
        raise BatchError("the file's MAC does not verify")
    return lines[:-1]


def _month_end(yymm: str) -> date:
    if len(yymm) != 4 or not yymm.isdigit():
        raise ValueError("expiry is yymm")
    year, month = 2000 + int(yymm[:2]), int(yymm[2:])
    first_next = date(year + month // 12, month % 12 + 1, 1)
    return date.fromordinal(first_next.toordinal() - 1)

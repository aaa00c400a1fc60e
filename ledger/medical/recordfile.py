"""The framing every medical file shares (specs/medical-files.md): UTF-8 text, one record a line,
fields separated by ``|``, a header, detail records, a trailer with the record count and the
amount total in fen, and a MAC line.

    H|<kind>|<header fields...>
    D|<fields...>
    T|<record count>|<amount total fen>
    M|<16 hex: X9.19 MAC under the counterparty's file key over every byte before this line>

Pure: parsing and building only. The MAC itself is computed by the HSM (`ledger.medical.filemac`);
`Framed.mac_input` is exactly the bytes it covers. Any defect refuses the whole file.

>>> body = build("DEMO", ["v1"], [["a", "5"], ["b", "7"]], amount_total_fen=12)
>>> framed = parse(body + b"M|0011223344556677\\n", "DEMO")
>>> framed.header, framed.records, framed.amount_total_fen
(('v1',), (('a', '5'), ('b', '7')), 12)
>>> framed.mac.hex()
'0011223344556677'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SEPARATOR = "|"
RECORDS_MAX = 1_000_000
LINE_CHARS_MAX = 4096


class MedicalFileError(ValueError):
    """The file is refused as a whole; `line` is 1-based (0: the file as a whole)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class Framed:
    kind: str
    header: tuple[str, ...]
    records: tuple[tuple[str, ...], ...]
    record_count: int
    amount_total_fen: int
    mac_input: bytes
    mac: bytes


def _field_text(value: str) -> str:
    if SEPARATOR in value or "\n" in value or "\r" in value:
        raise MedicalFileError(f"a field may not contain '|' or a line break: {value!r}")
    return value


def _line(tag: str, fields: Sequence[str]) -> str:
    return SEPARATOR.join([tag, *(_field_text(field) for field in fields)]) + "\n"


def build(
    kind: str,
    header: Sequence[str],
    records: Sequence[Sequence[str]],
    *,
    amount_total_fen: int,
) -> bytes:
    """The bytes the MAC covers (header, details, trailer); append `mac_line(mac)` to finish."""
    if len(records) > RECORDS_MAX:
        raise MedicalFileError(f"more than {RECORDS_MAX} records")
    text = _line("H", [kind, *header])
    text += "".join(_line("D", record) for record in records)
    text += _line("T", [str(len(records)), str(amount_total_fen)])
    return text.encode("utf-8")


def mac_line(mac: bytes) -> bytes:
    return f"M|{mac.hex().upper()}\n".encode("ascii")


def parse_int(text: str, what: str, line: int, *, minimum: int = 0) -> int:
    """A decimal integer field (digits only, optional leading '-' when minimum < 0)."""
    digits = text[1:] if text.startswith("-") and minimum < 0 else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise MedicalFileError(f"{what} is not an integer: {text!r}", line)
    value = int(text)
    if value < minimum:
        raise MedicalFileError(f"{what} below {minimum}: {value}", line)
    return value


def parse(data: bytes, kind: str) -> Framed:
    """Split a file into its parts, checking the framing and the record count (not the MAC nor
    the amount total, whose meaning depends on the kind of file)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MedicalFileError(f"not UTF-8 at byte {error.start}") from None
    if not text.endswith("\n"):
        raise MedicalFileError("the file does not end with a line break")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or len(lines) > RECORDS_MAX + 3:
        raise MedicalFileError("a file has a header, a trailer and a MAC line")
    rows: list[tuple[str, ...]] = []
    for number, line in enumerate(lines, start=1):
        if len(line) > LINE_CHARS_MAX or "\r" in line:
            raise MedicalFileError("line too long or carriage return", number)
        rows.append(tuple(line.split(SEPARATOR)))
    head, *details, trailer, mac_row = rows
    if head[:2] != ("H", kind):
        raise MedicalFileError(f"the header is not H|{kind}", 1)
    for number, row in enumerate(details, start=2):
        if row[0] != "D":
            raise MedicalFileError("expected a detail record D|...", number)
    trailer_line = len(rows) - 1
    if trailer[0] == "D":
        raise MedicalFileError(
            "the trailer is missing (a detail record before the MAC line; "
            "expected T|count|amount total)",
            trailer_line,
        )
    if trailer[0] != "T" or len(trailer) != 3:
        raise MedicalFileError("the trailer is T|count|amount total", trailer_line)
    count = parse_int(trailer[1], "record count", trailer_line)
    total = parse_int(trailer[2], "amount total", trailer_line, minimum=-(10**17))
    if count != len(details):
        raise MedicalFileError(
            f"the trailer counts {count} records, the file has {len(details)}", trailer_line
        )
    if mac_row[0] != "M" or len(mac_row) != 2 or len(mac_row[1]) != 16:
        raise MedicalFileError("the last line is M|<16 hex MAC>", len(rows))
    try:
        mac = bytes.fromhex(mac_row[1])
    except ValueError:
        raise MedicalFileError("the MAC is not hex", len(rows)) from None
    mac_input = data[: len(data) - len(lines[-1].encode("utf-8")) - 1]
    return Framed(
        kind=kind,
        header=head[2:],
        records=tuple(row[1:] for row in details),
        record_count=count,
        amount_total_fen=total,
        mac_input=mac_input,
        mac=mac,
    )


def check_total(framed: Framed, computed_fen: int) -> None:
    if computed_fen != framed.amount_total_fen:
        raise MedicalFileError(
            f"the trailer's amount total is {framed.amount_total_fen} fen, "
            f"the records sum to {computed_fen} fen"
        )

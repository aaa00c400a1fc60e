"""The shared framing of a bank's files back to the centre (specs/dayend-files.md, "Return files"
and "Bank statements"): the return file 回盘 (`ledger.dayend.return_file`) and the daily statement
of the centre's account at the bank (`ledger.dayend.bank_statement`) are both built on it.

The same framing as the payout file (`ledger.dayend.payout_file`): fixed-width GB18030 lines of
220 bytes, a header, one line per item, a trailer with the count and the total, then an X9.19 MAC
in hex under the bank's file key over every byte before it. No card numbers. Byte-deterministic.
Here: the refusal (:class:`BankFileError`), the field helpers, the framing of a sealed file
(:func:`_framed`), sealing and checking the MAC (:func:`seal`, :func:`verify`), the bank of a
header (:func:`header_bank`) and the dates a file may carry (:func:`check_dates`).
"""

from __future__ import annotations

import datetime as dt
import re

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef
from ledger.dayend.payout_file import ENCODING, LINE_BYTES, PayoutFileError, _field, _fields, _line

VERSION = "01"
MAC_HEX = 16


class BankFileError(PayoutFileError):
    """A return file or statement that does not check; refused whole."""


# The payout file's fixed-width field helpers, their refusals as this module's.
def field(value: str, width: int, name: str, *, digits: bool = False) -> bytes:
    try:
        return _field(value, width, name, digits=digits)
    except PayoutFileError as error:
        raise BankFileError(str(error)) from None


def fields_of(line: bytes, fields: tuple[tuple[str, int], ...]) -> dict[str, str]:
    try:
        return _fields(line, fields)
    except PayoutFileError as error:
        raise BankFileError(str(error)) from None


def line_of(fields: tuple[tuple[str, int], ...], values: dict[str, str], digits: set[str]) -> bytes:
    try:
        return _line(fields, values, digits)
    except PayoutFileError as error:
        raise BankFileError(str(error)) from None


def _digits(value: int, width: int, name: str) -> bytes:
    return field(str(value), width, name, digits=True)


def _lines(plain: bytes) -> tuple[list[bytes], bytes, str]:
    """(fixed-width lines before the trailer, the trailer without its MAC, the MAC hex)."""
    if not plain.endswith(b"\n"):
        raise BankFileError("the file does not end with a line break (truncated?)")
    lines = plain[:-1].split(b"\n")
    for number, x in enumerate(lines, 1):
        if x.endswith(b"\r"):
            raise BankFileError(
                f"line {number} of the file (the header is line 1) ends with CR LF: lines end "
                "with LF alone (a text-mode transfer?)"
            )
        if len(x) != LINE_BYTES:
            raise BankFileError(
                f"line {number} of the file (the header is line 1) is {len(x)} bytes, not "
                f"{LINE_BYTES}"
            )
    if len(lines) < 2:
        raise BankFileError("the trailer is missing: the file has only a header")
    if not lines[-1].startswith(b"T"):
        raise BankFileError(
            f"the trailer is missing: the last line ({len(lines)} of the file) is not a T record"
        )
    return lines[:-1], lines[-1], ""


def _framed(
    data: bytes, header: tuple[tuple[str, int], ...], fmt: str
) -> tuple[dict[str, str], list[bytes], bytes, str, bytes]:
    """(header, detail lines, trailer before the MAC, MAC hex, MAC input) of a sealed file."""
    lines, trailer, _ = _lines(data)
    head = fields_of(lines[0], header)
    if head["type"] != "H" or head["format"] != fmt or head["version"] != VERSION:
        raise BankFileError(f"not a {fmt} file (header)")
    if len(head["date"]) != 8 or not head["date"].isdigit():
        raise BankFileError("the header's date is malformed")
    body = trailer.rstrip(b" ")
    mac_hex = body[-MAC_HEX:].decode("ascii", "replace")
    before = body[:-MAC_HEX]
    mac_input = data[: len(data) - LINE_BYTES - 1] + before
    return head, lines[1:], before, mac_hex, mac_input


def _iso(yyyymmdd: str) -> str:
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:]}"


def _number(values: dict[str, str], name: str, line: int) -> int:
    if not values[name].isdigit():
        raise BankFileError(f"line {line}: {name} is not a number")
    return int(values[name])


def _finish(mac_input: bytes, mac: bytes) -> bytes:
    cut = mac_input.rindex(b"\n") + 1
    trailer = mac_input[cut:] + mac.hex().upper().encode("ascii")
    return mac_input[:cut] + trailer.ljust(LINE_BYTES, b" ") + b"\n"


async def seal(hsm: Hsm, file_key: KeyRef, mac_input: bytes) -> bytes:
    """The file as written: `mac_input` (from a render function) with its MAC in the trailer."""
    mac = await hsm.generate_mac(file_key, MacAlgorithm.X9_19, mac_input)
    return _finish(mac_input, mac)


async def verify(hsm: Hsm, file_key: KeyRef, mac_hex: str, mac_input: bytes) -> None:
    try:
        mac = bytes.fromhex(mac_hex)
    except ValueError:
        raise BankFileError("the trailer's MAC is not hex") from None
    if len(mac) != 8 or not await hsm.verify_mac(file_key, MacAlgorithm.X9_19, mac_input, mac):
        raise BankFileError(
            "the file's MAC does not verify under the bank's file key (altered, or another key)"
        )


def header_bank(data: bytes) -> str | None:
    """The bank id of a return file or statement (to pick its file key), None if neither."""
    if data[:1] != b"H" or data[1:9].rstrip(b" ") not in (b"MSRETURN", b"MSSTMT"):
        return None
    return data[19:51].decode(ENCODING, "replace").rstrip()


_NAME_DATE = (re.compile(r"^RETURN_.+_(\d{8})\.txt$"), re.compile(r"^STMT_(\d{8})_.+\.txt$"))


def check_dates(file_date: str, file_name: str | None, latest: dt.date) -> None:
    """Refuse a return file or statement dated after `latest` (the business date after the
    current one), or whose name, when in the spec's form, carries another date than its header.

    >>> check_dates("2026-11-26", "STMT_20261126_b1_FUND.txt", dt.date(2026, 11, 27))
    >>> check_dates("2026-11-26", "STMT_20261125_b1_FUND.txt", dt.date(2026, 11, 27))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ledger.dayend.bank_files.BankFileError: ...for 2026-11-25 but its header is dated 2026-11-26
    >>> check_dates("2026-12-26", None, dt.date(2026, 11, 27))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ledger.dayend.bank_files.BankFileError: ...dated 2026-12-26, later than 2026-11-27 (the next...
    """
    label = file_name or "the file"
    if file_date > latest.isoformat():
        raise BankFileError(
            f"{label} is dated {file_date}, later than {latest.isoformat()} (the next business "
            "date): a date in the future"
        )
    for pattern in _NAME_DATE if file_name else ():
        found = pattern.match(file_name or "")
        if found and _iso(found.group(1)) != file_date:
            raise BankFileError(
                f"{label} is named for {_iso(found.group(1))} but its header is dated {file_date}"
            )

"""A bank's files back to the centre (specs/dayend-files.md, "Return files" and "Bank
statements"): the return file 回盘 of a payout file — each payment paid or returned with a reason —
and the daily statement of the centre's account at the bank (contributions into the fund bank
account, savings debits into the EP float, payouts out of them).

The same framing as the payout file (`ledger.dayend.payout_file`): fixed-width GB18030 lines of
220 bytes, a header, one line per item, a trailer with the count and the total, then an X9.19 MAC
in hex under the bank's file key over every byte before it. No card numbers. Byte-deterministic.
Layout pure (:func:`render_return`, :func:`split_return`, …); sealing and checking await the HSM.

>>> r = ReturnFile("b1", "2026-11-26", "PAYOUT_20261125_b1_INS.txt", "00" * 8, (
...     ReturnLine(1, "20261125-I-h1", "h1", "6200000001", 500, RETURNED, "R002", "bad account"),))
>>> sealed = _finish(render_return(r), bytes(8))
>>> split_return(sealed)[0] == r, sealed.count(b"\\n"), len(sealed)
(True, 3, 663)
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef
from ledger.dayend.payout_file import ENCODING, LINE_BYTES, PayoutFileError, _field, _fields, _line

RETURN_FORMAT = "MSRETURN"
STATEMENT_FORMAT = "MSSTMT"
VERSION = "01"
PAID, RETURNED = "P", "R"
#: Reason codes a bank gives for a returned payment (free text beside them).
REASONS = {
    "R001": "account closed",
    "R002": "account number wrong",
    "R003": "account name does not match",
    "R004": "account frozen",
    "R099": "other",
}
#: What a statement line is; the centre matches each kind against what its ledger expects.
CONTRIBUTION, SAVINGS_DEBITS, PAYOUT, OTHER = "CONTRIBUTION", "SAVINGS_DEBITS", "PAYOUT", "OTHER"
STATEMENT_KINDS = (CONTRIBUTION, SAVINGS_DEBITS, PAYOUT, OTHER)
#: The centre's accounts at a bank: the insurance fund's, and the cardholders' EP float.
FUND, EP_FLOAT = "FUND", "EPFLOAT"
CREDIT, DEBIT = "C", "D"  # money into / out of the centre's account

R_HEADER = (
    ("type", 1),
    ("format", 8),
    ("version", 2),
    ("date", 8),
    ("bank", 32),
    ("payout_file", 60),
    ("payout_mac", 16),
)
R_DETAIL = (
    ("type", 1),
    ("line", 6),
    ("payout_line", 6),
    ("payout_id", 48),
    ("payee_id", 32),
    ("account_no", 40),
    ("amount_fen", 15),
    ("currency", 3),
    ("status", 1),
    ("reason_code", 4),
    ("reason", 40),
)
R_TRAILER = (
    ("type", 1),
    ("count", 8),
    ("total_fen", 18),
    ("paid_count", 8),
    ("paid_fen", 18),
    ("returned_count", 8),
    ("returned_fen", 18),
)
S_HEADER = (
    ("type", 1),
    ("format", 8),
    ("version", 2),
    ("date", 8),
    ("bank", 32),
    ("account", 10),
    ("statement_id", 32),
)
S_DETAIL = (
    ("type", 1),
    ("line", 6),
    ("line_ref", 32),
    ("kind", 16),
    ("direction", 1),
    ("amount_fen", 15),
    ("currency", 3),
    ("counterparty", 48),
    ("text", 60),
)
S_TRAILER = (("type", 1), ("count", 8), ("credit_fen", 18), ("debit_fen", 18))
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


@dataclass(frozen=True, slots=True)
class ReturnLine:
    payout_line: int  # the payment's line number in the payout file
    payout_id: str
    payee_id: str
    account_no: str
    amount_fen: int
    status: str  # PAID | RETURNED
    reason_code: str = ""  # one of REASONS when returned
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReturnFile:
    bank_id: str
    return_date: str  # yyyy-mm-dd
    payout_file: str  # the name of the payout file answered
    payout_mac: str  # its MAC (hex): binds the answer to those very bytes
    lines: tuple[ReturnLine, ...]

    @property
    def total_fen(self) -> int:
        return sum(x.amount_fen for x in self.lines)


@dataclass(frozen=True, slots=True)
class StatementEntry:
    line_ref: str  # the bank's unique reference of the booking
    kind: str  # one of STATEMENT_KINDS
    direction: str  # CREDIT (into the centre's account) | DEBIT (out of it)
    amount_fen: int
    counterparty: str  # unit id (contribution), bank id (savings debits), payout id (payout)
    text: str = ""


@dataclass(frozen=True, slots=True)
class Statement:
    bank_id: str
    statement_date: str  # yyyy-mm-dd
    account: str  # FUND | EP_FLOAT
    statement_id: str
    entries: tuple[StatementEntry, ...]

    def total_fen(self, direction: str) -> int:
        return sum(e.amount_fen for e in self.entries if e.direction == direction)


def masked_card(account_no: str) -> str:
    """A refund's account number (the cardholder's card number) as a return file carries it:
    the first 6 and last 4 digits, starred between (all starred when shorter than 11).

    >>> masked_card("6222000011112222"), masked_card("6222000011")
    ('622200******2222', '**********')
    """
    if len(account_no) < 11:
        return "*" * len(account_no)
    return account_no[:6] + "*" * (len(account_no) - 10) + account_no[-4:]


def return_name(r: ReturnFile) -> str:
    """RETURN_<the payout file's name without extension>_<yyyymmdd>.txt"""
    stem = r.payout_file.rsplit(".", 1)[0]
    return f"RETURN_{stem}_{r.return_date.replace('-', '')}.txt"


def statement_name(s: Statement) -> str:
    return f"STMT_{s.statement_date.replace('-', '')}_{s.bank_id}_{s.account}.txt"


def _digits(value: int, width: int, name: str) -> bytes:
    return field(str(value), width, name, digits=True)


def render_return(r: ReturnFile) -> bytes:
    """Header, lines and the trailer before its MAC: the MAC's input."""
    date = r.return_date.replace("-", "")
    out = [
        line_of(
            R_HEADER,
            {
                "type": "H",
                "format": RETURN_FORMAT,
                "version": VERSION,
                "date": date,
                "bank": r.bank_id,
                "payout_file": r.payout_file,
                "payout_mac": r.payout_mac,
            },
            set(),
        )
    ]
    for number, x in enumerate(r.lines, 1):
        if x.amount_fen <= 0 or x.status not in (PAID, RETURNED):
            raise BankFileError(f"line {number}: a positive amount, paid or returned")
        if (x.status == RETURNED) != bool(x.reason_code) or (
            x.reason_code and x.reason_code not in REASONS
        ):
            raise BankFileError(f"line {number}: a returned payment has a reason code of REASONS")
        values = {
            "type": "D",
            "line": str(number),
            "payout_line": str(x.payout_line),
            "payout_id": x.payout_id,
            "payee_id": x.payee_id,
            "account_no": x.account_no,
            "amount_fen": str(x.amount_fen),
            "currency": "CNY",
            "status": x.status,
            "reason_code": x.reason_code,
            "reason": x.reason,
        }
        out.append(line_of(R_DETAIL, values, {"line", "payout_line", "amount_fen"}))
    paid = [x for x in r.lines if x.status == PAID]
    returned = [x for x in r.lines if x.status == RETURNED]
    out.append(
        b"T"
        + _digits(len(r.lines), 8, "count")
        + _digits(r.total_fen, 18, "total")
        + _digits(len(paid), 8, "paid count")
        + _digits(sum(x.amount_fen for x in paid), 18, "p")
        + _digits(len(returned), 8, "returned count")
        + _digits(sum(x.amount_fen for x in returned), 18, "returned total")
    )
    return b"".join(out)


def render_statement(s: Statement) -> bytes:
    """Header, entries and the trailer before its MAC: the MAC's input."""
    if s.account not in (FUND, EP_FLOAT):
        raise BankFileError(f"a statement is of the {FUND} or {EP_FLOAT} account")
    date = s.statement_date.replace("-", "")
    out = [
        line_of(
            S_HEADER,
            {
                "type": "H",
                "format": STATEMENT_FORMAT,
                "version": VERSION,
                "date": date,
                "bank": s.bank_id,
                "account": s.account,
                "statement_id": s.statement_id,
            },
            set(),
        )
    ]
    for number, e in enumerate(s.entries, 1):
        if e.amount_fen <= 0 or e.kind not in STATEMENT_KINDS or e.direction not in (CREDIT, DEBIT):
            raise BankFileError(f"line {number}: a positive amount, a known kind and direction")
        if not e.line_ref:
            raise BankFileError(f"line {number}: every entry has the bank's reference")
        values = {
            "type": "D",
            "line": str(number),
            "line_ref": e.line_ref,
            "kind": e.kind,
            "direction": e.direction,
            "amount_fen": str(e.amount_fen),
            "currency": "CNY",
            "counterparty": e.counterparty,
            "text": e.text,
        }
        out.append(line_of(S_DETAIL, values, {"line", "amount_fen"}))
    out.append(
        b"T"
        + _digits(len(s.entries), 8, "count")
        + _digits(s.total_fen(CREDIT), 18, "credits")
        + _digits(s.total_fen(DEBIT), 18, "debits")
    )
    return b"".join(out)


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


def split_return(sealed: bytes) -> tuple[ReturnFile, str, bytes]:
    """(return file, MAC hex, MAC input); layout and every trailer total checked."""
    head, details, trailer, mac_hex, mac_input = _framed(sealed, R_HEADER, RETURN_FORMAT)
    lines = []
    for number, raw in enumerate(details, 1):
        v = fields_of(raw, R_DETAIL)
        if v["type"] != "D" or v["line"] != f"{number:06d}" or v["currency"] != "CNY":
            raise BankFileError(f"line {number}: not the return line expected there")
        x = ReturnLine(
            _number(v, "payout_line", number),
            v["payout_id"],
            v["payee_id"],
            v["account_no"],
            _number(v, "amount_fen", number),
            v["status"],
            v["reason_code"],
            v["reason"],
        )
        if x.status not in (PAID, RETURNED) or (x.status == RETURNED) != (x.reason_code in REASONS):
            raise BankFileError(f"line {number}: status P, or R with a known reason code")
        if x.amount_fen <= 0:
            raise BankFileError(f"line {number}: an amount must be positive")
        lines.append(x)
    r = ReturnFile(
        head["bank"], _iso(head["date"]), head["payout_file"], head["payout_mac"], tuple(lines)
    )
    if render_return(r)[-len(trailer) - 1 :] != b"\n" + trailer:
        raise BankFileError("the trailer's counts or totals differ from the lines'")
    return r, mac_hex, mac_input


def split_statement(sealed: bytes) -> tuple[Statement, str, bytes]:
    """(statement, MAC hex, MAC input); layout and the trailer's count and totals checked."""
    head, details, trailer, mac_hex, mac_input = _framed(sealed, S_HEADER, STATEMENT_FORMAT)
    entries = []
    for number, raw in enumerate(details, 1):
        v = fields_of(raw, S_DETAIL)
        if v["type"] != "D" or v["line"] != f"{number:06d}" or v["currency"] != "CNY":
            raise BankFileError(f"line {number}: not the statement line expected there")
        e = StatementEntry(
            v["line_ref"],
            v["kind"],
            v["direction"],
            _number(v, "amount_fen", number),
            v["counterparty"],
            v["text"],
        )
        if e.kind not in STATEMENT_KINDS or e.direction not in (CREDIT, DEBIT) or not e.line_ref:
            raise BankFileError(f"line {number}: unknown kind or direction, or no reference")
        entries.append(e)
    first: dict[str, int] = {}
    for number, e in enumerate(entries, 1):
        if e.line_ref in first:
            raise BankFileError(
                f"bank reference {e.line_ref} appears twice in the statement (lines "
                f"{first[e.line_ref]} and {number})"
            )
        first[e.line_ref] = number
    s = Statement(
        head["bank"], _iso(head["date"]), head["account"], head["statement_id"], tuple(entries)
    )
    if render_statement(s)[-len(trailer) - 1 :] != b"\n" + trailer:
        raise BankFileError("the trailer's count or totals differ from the lines'")
    return s, mac_hex, mac_input


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


async def parse_return(hsm: Hsm, file_key: KeyRef, data: bytes) -> ReturnFile:
    """A return file checked whole: layout, trailer, MAC; BankFileError otherwise."""
    r, mac_hex, mac_input = split_return(data)
    await verify(hsm, file_key, mac_hex, mac_input)
    return r


async def parse_statement(hsm: Hsm, file_key: KeyRef, data: bytes) -> Statement:
    s, mac_hex, mac_input = split_statement(data)
    await verify(hsm, file_key, mac_hex, mac_input)
    return s


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

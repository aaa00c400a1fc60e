"""A bank's return file 回盘 of a payout file (specs/dayend-files.md, "Return files"): each
payment paid or returned with a reason. Framed, sealed and checked as every bank file is
(`ledger.dayend.bank_files`). Layout pure (:func:`render_return`, :func:`split_return`); parsing
awaits the HSM (:func:`parse_return`).

>>> from ledger.dayend.bank_files import _finish
>>> r = ReturnFile("b1", "2026-11-26", "PAYOUT_20261125_b1_INS.txt", "00" * 8, (
...     ReturnLine(1, "20261125-I-h1", "h1", "6200000001", 500, RETURNED, "R002", "bad account"),))
>>> sealed = _finish(render_return(r), bytes(8))
>>> split_return(sealed)[0] == r, sealed.count(b"\\n"), len(sealed)
(True, 3, 663)
"""

from __future__ import annotations

from dataclasses import dataclass

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.dayend.bank_files import (
    VERSION,
    BankFileError,
    _digits,
    _framed,
    _iso,
    _number,
    fields_of,
    line_of,
    verify,
)

RETURN_FORMAT = "MSRETURN"
PAID, RETURNED = "P", "R"
#: Reason codes a bank gives for a returned payment (free text beside them).
REASONS = {
    "R001": "account closed",
    "R002": "account number wrong",
    "R003": "account name does not match",
    "R004": "account frozen",
    "R099": "other",
}


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


async def parse_return(hsm: Hsm, file_key: KeyRef, data: bytes) -> ReturnFile:
    """A return file checked whole: layout, trailer, MAC; BankFileError otherwise."""
    r, mac_hex, mac_input = split_return(data)
    await verify(hsm, file_key, mac_hex, mac_input)
    return r

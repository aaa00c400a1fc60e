"""A bank's daily statement of the centre's account at the bank (specs/dayend-files.md, "Bank
statements"): contributions into the fund bank account, savings debits into the EP float, payouts
out of them. Framed, sealed and checked as every bank file is (`ledger.dayend.bank_files`).
Layout pure (:func:`render_statement`, :func:`split_statement`); parsing awaits the HSM
(:func:`parse_statement`).
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

STATEMENT_FORMAT = "MSSTMT"
#: What a statement line is; the centre matches each kind against what its ledger expects.
CONTRIBUTION, SAVINGS_DEBITS, PAYOUT, OTHER = "CONTRIBUTION", "SAVINGS_DEBITS", "PAYOUT", "OTHER"
STATEMENT_KINDS = (CONTRIBUTION, SAVINGS_DEBITS, PAYOUT, OTHER)
#: The centre's accounts at a bank: the insurance fund's, and the cardholders' EP float.
FUND, EP_FLOAT = "FUND", "EPFLOAT"
CREDIT, DEBIT = "C", "D"  # money into / out of the centre's account


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


def statement_name(s: Statement) -> str:
    return f"STMT_{s.statement_date.replace('-', '')}_{s.bank_id}_{s.account}.txt"


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


async def parse_statement(hsm: Hsm, file_key: KeyRef, data: bytes) -> Statement:
    s, mac_hex, mac_input = split_statement(data)
    await verify(hsm, file_key, mac_hex, mac_input)
    return s

"""The bank's side of the day-end files (specs/dayend-files.md): from a released payout or refund
file it writes the return file 回盘 — every payment paid, or returned with a reason by rule — and
the daily statements of the centre's accounts at the bank, each MACed under the file key the bank
shares with the centre (in the demo, the TEST ONLY key home's ``bank/<bank>/FILE``).

The bank checks the payout file as a bank would (trailer and MAC, decrypting a refund file)
through the same format code as the centre (`ledger.dayend.payout_file`,
`ledger.dayend.bank_files`), never a private copy. Byte-deterministic: the same inputs give the
same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ledger.dayend.payout_file as pf
from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend import return_file as rf


@dataclass(frozen=True)
class ReturnRule:
    """Which payments the bank returns: by payout id or payee id (→ reason code and text), or
    every payment above an amount (reason R099)."""

    returned: Mapping[str, tuple[str, str]]
    above_fen: int | None = None

    def decide(self, line: pf.PayoutLine) -> tuple[str, str, str]:
        """(status, reason code, reason text) for one payment."""
        for key in (line.payout_id, line.payee_id):
            if key in self.returned:
                code, text = self.returned[key]
                return rf.RETURNED, code, text or rf.REASONS[code]
        if self.above_fen is not None and line.amount_fen > self.above_fen:
            return rf.RETURNED, "R099", f"above {self.above_fen} fen"
        return rf.PAID, "", ""


async def return_file(
    hsm: Hsm, file_key: KeyRef, payout_data: bytes, return_date: str, rule: ReturnRule
) -> tuple[str, bytes]:
    """(file name, bytes) of the return file answering `payout_data`; PayoutFileError when the
    payout file does not check (the bank refuses it whole)."""
    checked = await pf.parse(hsm, file_key, payout_data)
    f = checked.file
    unknown = set(rule.returned) - {x.payout_id for x in f.lines} - {x.payee_id for x in f.lines}
    if unknown:
        raise bf.BankFileError(f"not in the payout file: {', '.join(sorted(unknown))}")
    lines = []
    for number, x in enumerate(f.lines, 1):
        status, code, text = rule.decide(x)
        # a refund's account number is the card number: never in clear in a return file
        account = rf.masked_card(x.account_no) if f.kind == pf.REFUND else x.account_no
        lines.append(
            rf.ReturnLine(
                number, x.payout_id, x.payee_id, account, x.amount_fen, status, code, text
            )
        )
    answer = rf.ReturnFile(f.bank_id, return_date, pf.file_name(f), checked.mac, tuple(lines))
    return rf.return_name(answer), await bf.seal(hsm, file_key, rf.render_return(answer))


def issuer_savings_debits(log_lines: Iterable[str]) -> int:
    """Savings debits (fen) the bank's issuer simulator recorded (`medswitch sim bank issuer`'s
    JSON lines): first sightings of 0200 less their reversals (0400/0420)."""
    total = 0
    for text in log_lines:
        if not text.strip().startswith("{"):
            continue
        record = json.loads(text)
        if record.get("repeat") or record.get("amount_fen") is None:
            continue
        if record.get("mti") == "0200":
            total += int(record["amount_fen"])
        elif record.get("mti") in ("0400", "0420"):
            total -= int(record["amount_fen"])
    return total


@dataclass(frozen=True)
class StatementInput:
    bank_id: str
    date: str  # yyyy-mm-dd
    account: str  # FUND | EPFLOAT
    contributions: tuple[tuple[str, int], ...] = ()  # (unit, fen) credits (FUND)
    savings_debits_fen: int = 0  # the day's savings debits, one credit (EPFLOAT)
    paid: tuple[rf.ReturnFile, ...] = ()  # return files whose paid payments left the account
    others: tuple[tuple[str, int, str], ...] = ()  # (counterparty, fen, C|D) unexplained items


def statement_entries(given: StatementInput) -> list[bs.StatementEntry]:
    date = given.date.replace("-", "")
    entries: list[bs.StatementEntry] = []

    def ref(letter: str) -> str:
        return f"{date}{given.account[0]}{letter}{len(entries) + 1:05d}"

    for unit, fen in given.contributions:
        entries.append(
            bs.StatementEntry(
                ref("C"), bs.CONTRIBUTION, bs.CREDIT, fen, unit, f"contributions from {unit}"
            )
        )
    if given.savings_debits_fen:
        entries.append(
            bs.StatementEntry(
                ref("S"),
                bs.SAVINGS_DEBITS,
                bs.CREDIT,
                given.savings_debits_fen,
                given.bank_id,
                "savings debits for EP loads",
            )
        )
    for answer in given.paid:
        for x in answer.lines:
            if x.status == rf.PAID:
                entries.append(
                    bs.StatementEntry(
                        ref("P"),
                        bs.PAYOUT,
                        bs.DEBIT,
                        x.amount_fen,
                        x.payout_id,
                        f"payout to {x.payee_id}",
                    )
                )
    for party, fen, direction in given.others:
        entries.append(bs.StatementEntry(ref("O"), bs.OTHER, direction, fen, party, "other"))
    return entries


async def statement_file(hsm: Hsm, file_key: KeyRef, given: StatementInput) -> tuple[str, bytes]:
    """(file name, bytes) of the day's statement of one of the centre's accounts."""
    date = given.date.replace("-", "")
    statement = bs.Statement(
        given.bank_id,
        given.date,
        given.account,
        f"{given.bank_id}-{given.account}-{date}",
        tuple(statement_entries(given)),
    )
    return bs.statement_name(statement), await bf.seal(
        hsm, file_key, bs.render_statement(statement)
    )

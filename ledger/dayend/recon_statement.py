"""Importing a bank's daily statement of the centre's accounts (DESIGN §5, specs/dayend-files.md
"Bank statements"): each line matched to what the ledger expects, posted where the statement is
what moves the money, unmatched lines to review.

=================  =====  ========  ==========================================================
kind               dir.   account   matched when → posted
=================  =====  ========  ==========================================================
CONTRIBUTION       C      FUND      the unit owes at least that much (contributions receivable)
                                    → fund bank account → contributions receivable of the unit
SAVINGS_DEBITS     C      EPFLOAT   the bank (counterparty) owes at least that much (clearing)
                                    → EP float → bank clearing of the bank
PAYOUT             D      FUND /    the payout (counterparty) went to this bank from this
                          EPFLOAT   account, for this amount, and its return file said paid;
                                    nothing posts (the return file did)
anything else                       → review (reason ``bank_unmatched``)
=================  =====  ========  ==========================================================

Idempotent by the bank's line reference: a line on record (``bank_statement_lines``, unique per
bank and reference) is skipped, and a posting's transfer id comes from the bank and the
reference, so a crash between posting and recording is repaired by importing again. The MAC is
checked under the bank's file key before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger import schema
from ledger.core import Ledger, ReviewItem, transfer_id
from ledger.dayend import bank_files as bf
from ledger.dayend.review_queue import audit
from ledger.events.funds import (
    StatementLine,
    post_contribution_received,
    post_savings_debits_settled,
)
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.medical.sql_store import write_transaction

REASON = "bank_unmatched"
KIND_ROW = {
    bf.CONTRIBUTION: "contribution",
    bf.SAVINGS_DEBITS: "savings_debit",
    bf.PAYOUT: "payout_paid",
    bf.OTHER: "other",
}
SOURCE_OF = {bf.FUND: "insurance", bf.EP_FLOAT: "ep"}


@dataclass(frozen=True)
class LineOutcome:
    entry: bf.StatementEntry
    status: str  # matched | review | already
    transfer_id: str | None
    why: str


@dataclass(frozen=True)
class StatementImport:
    statement: bf.Statement
    lines: tuple[LineOutcome, ...]

    def count(self, status: str) -> int:
        return sum(1 for x in self.lines if x.status == status)


def _on_record(engine: Engine, bank_id: str, refs: list[str]) -> set[str]:
    c = schema.bank_statement_lines.c
    with engine.connect() as connection:
        found = connection.execute(
            select(c.line_ref).where(c.bank_id == bank_id, c.line_ref.in_(refs))
        )
        return set(found.scalars())


def _kind_of_party(engine: Engine, party: str) -> str | None:
    i = schema.institutions.c
    with engine.connect() as connection:
        return connection.execute(select(i.kind).where(i.id == party)).scalar()


def _payout(engine: Engine, payout_id: str) -> dict[str, object] | None:
    p = schema.payouts.c
    with engine.connect() as connection:
        row = connection.execute(select(schema.payouts).where(p.id == payout_id)).mappings()
        found = row.first()
        return dict(found) if found else None


class _Owed:
    """What each party still owes the centre, less what earlier lines of this import settled."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.used: dict[str, int] = {}

    async def take(self, account: str, amount_fen: int) -> bool:
        found = await self.ledger.balance(account)
        owed = (found.balance_fen if found else 0) - self.used.get(account, 0)
        if found is None or amount_fen > owed:
            return False
        self.used[account] = self.used.get(account, 0) + amount_fen
        return True


async def _match(
    engine: Engine, ledger: Ledger, s: bf.Statement, e: bf.StatementEntry, owed: _Owed
) -> LineOutcome:
    line = StatementLine(f"{s.bank_id}:{e.line_ref}", 0, e.counterparty, e.amount_fen)
    posted = await _posted_before(ledger, line)
    if posted is not None:  # a crash after posting, before the line was recorded
        return LineOutcome(e, "matched", posted, "")
    if e.kind == bf.CONTRIBUTION and (e.direction, s.account) == (bf.CREDIT, bf.FUND):
        if _kind_of_party(engine, e.counterparty) != "employer_unit":
            return LineOutcome(e, "review", None, f"{e.counterparty} is no employer unit")
        receivable = account_id(K.CONTRIBUTIONS_RECEIVABLE, e.counterparty)
        if not await owed.take(receivable, e.amount_fen):
            return LineOutcome(e, "review", None, "more than the unit's contributions owed")
        result = await post_contribution_received(ledger, line)
    elif e.kind == bf.SAVINGS_DEBITS and (e.direction, s.account) == (bf.CREDIT, bf.EP_FLOAT):
        if e.counterparty != s.bank_id:
            return LineOutcome(e, "review", None, "savings debits of another bank")
        if not await owed.take(account_id(K.BANK_CLEARING, s.bank_id), e.amount_fen):
            return LineOutcome(e, "review", None, "more than the bank's savings debits owed")
        result = await post_savings_debits_settled(ledger, line)
    elif e.kind == bf.PAYOUT and e.direction == bf.DEBIT:
        return _match_payout(engine, s, e)
    else:
        return LineOutcome(e, "review", None, f"{e.kind}/{e.direction} on {s.account}: unexpected")
    if not result.ok:
        return LineOutcome(e, "review", None, f"the ledger refused it: {result.outcome.value}")
    return LineOutcome(e, "matched", result.transfer_ids[0], "")


async def _posted_before(ledger: Ledger, line: StatementLine) -> str | None:
    """The line's posting if an earlier import made it (the ids of ledger.events.funds)."""
    ids = [
        transfer_id(name, line.statement_id, line.line_no)
        for name in ("contribution-received", "savings-debits-settled")
    ]
    found = await ledger.lookup_transfers(ids)
    return next((i for i in ids if i in found and found[i].result.ok), None)


def _match_payout(engine: Engine, s: bf.Statement, e: bf.StatementEntry) -> LineOutcome:
    p = _payout(engine, e.counterparty)
    if p is None:
        return LineOutcome(e, "review", None, f"no payout {e.counterparty}")
    expected = (s.bank_id, SOURCE_OF.get(s.account), e.amount_fen)
    if (p["bank_id"], p["source"], p["amount_fen"]) != expected:
        return LineOutcome(e, "review", None, "the payout's bank, account or amount differs")
    if p["status"] != "paid":
        return LineOutcome(e, "review", None, f"the payout is {p['status']}, not paid")
    return LineOutcome(e, "matched", transfer_id("payout-result", e.counterparty), "")


def review_item(s: bf.Statement, outcome: LineOutcome) -> ReviewItem:
    e = outcome.entry
    return ReviewItem(
        key=transfer_id("review", REASON, s.bank_id, e.line_ref),
        reason=REASON,
        reference=f"statement|{s.bank_id}|{s.statement_date}|{e.line_ref}|{e.kind}|"
        f"{e.counterparty}"[:240],
        amount_fen=e.amount_fen,
        detail=f"{s.account} {e.direction} {e.text}: {outcome.why}",
    )


async def import_statement(
    engine: Engine,
    ledger: Ledger,
    hsm: Hsm,
    file_key: KeyRef,
    data: bytes,
    operator: str,
    now_us: int,
) -> StatementImport:
    """Check the statement whole, then match, post and record each new line once."""
    s = await bf.parse_statement(hsm, file_key, data)
    seen = _on_record(engine, s.bank_id, [e.line_ref for e in s.entries])
    owed = _Owed(ledger)
    outcomes = []
    for e in s.entries:
        if e.line_ref in seen:
            outcomes.append(LineOutcome(e, "already", None, ""))
            continue
        outcome = await _match(engine, ledger, s, e, owed)
        if outcome.status == "review":
            await ledger.add_review(review_item(s, outcome))
        outcomes.append(outcome)
    fresh = [x for x in outcomes if x.status != "already"]
    with write_transaction(engine) as c:
        for x in fresh:
            c.execute(
                insert(schema.bank_statement_lines)
                .prefix_with("OR IGNORE", dialect="sqlite")
                .values(
                    bank_id=s.bank_id,
                    statement_date=s.statement_date,
                    line_ref=x.entry.line_ref,
                    kind=KIND_ROW[x.entry.kind],
                    amount_fen=x.entry.amount_fen,
                    counterparty=x.entry.counterparty[:120],
                    status=x.status,
                    matched_transfer_id=x.transfer_id,
                    file_name=bf.statement_name(s),
                    imported_at_us=now_us,
                )
            )
        audit(
            c,
            now_us,
            operator,
            "recon.statement",
            bf.statement_name(s),
            bank=s.bank_id,
            date=s.statement_date,
            new=len(fresh),
            matched=sum(1 for x in fresh if x.status == "matched"),
            review=sum(1 for x in fresh if x.status == "review"),
        )
    return StatementImport(s, tuple(outcomes))

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
bank and reference) with the same content (statement date, kind, amount, counterparty) is a repeat
and skipped (``already``); the same reference with other content is never dropped: it goes to
review (``conflict``, reason ``bank_unmatched``) and posts nothing. A posting's transfer id comes
from the bank and the reference, so a crash between posting and recording is repaired by
importing again. The MAC is checked under the bank's file key before anything is read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger import schema
from ledger.core import Ledger, ReviewItem, transfer_id
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend.calendar import Cutover
from ledger.dayend.review_queue import (
    ReviewError,
    ReviewQueue,
    Status,
    audit,
    audit_refusal,
    set_status,
)
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
    bs.CONTRIBUTION: "contribution",
    bs.SAVINGS_DEBITS: "savings_debit",
    bs.PAYOUT: "payout_paid",
    bs.OTHER: "other",
}
SOURCE_OF = {bs.FUND: "insurance", bs.EP_FLOAT: "ep"}


@dataclass(frozen=True)
class LineOutcome:
    entry: bs.StatementEntry
    status: str  # matched | review | already | conflict
    transfer_id: str | None
    why: str


@dataclass(frozen=True)
class StatementImport:
    statement: bs.Statement
    lines: tuple[LineOutcome, ...]
    rematched: int = 0  # payout lines of earlier imports waiting in review, matched now

    def count(self, status: str) -> int:
        return sum(1 for x in self.lines if x.status == status)


def _content(statement_date: str, kind: str, amount_fen: int, counterparty: str) -> tuple[Any, ...]:
    return (statement_date, kind, int(amount_fen), counterparty[:120])


def _entry_content(s: bs.Statement, e: bs.StatementEntry) -> tuple[Any, ...]:
    return _content(s.statement_date, KIND_ROW[e.kind], e.amount_fen, e.counterparty)


def _on_record(engine: Engine, bank_id: str, refs: list[str]) -> dict[str, tuple[Any, ...]]:
    """The content of each line on record under these references."""
    c = schema.bank_statement_lines.c
    found: dict[str, tuple[Any, ...]] = {}
    columns = (c.line_ref, c.statement_date, c.kind, c.amount_fen, c.counterparty)
    with engine.connect() as connection:
        for at in range(0, len(refs), 500):
            chunk = refs[at : at + 500]
            rows = connection.execute(
                select(*columns).where(c.bank_id == bank_id, c.line_ref.in_(chunk))
            )
            for row in rows:
                found[row.line_ref] = _content(*row[1:])
    return found


def _conflict(s: bs.Statement, e: bs.StatementEntry, was: tuple[Any, ...]) -> LineOutcome:
    date, kind, amount_fen, counterparty = was
    why = (
        f"reference {e.line_ref} is on record for another line ({date} {kind} {amount_fen} fen "
        f"{counterparty}): not posted, ask the bank"
    )
    return LineOutcome(e, "conflict", None, why)


@dataclass
class _Context:
    """What matching needs, read once for the whole statement: institutions' kinds, what each
    party owes (less what earlier lines of this import settled), postings an interrupted import
    made, and the payouts the statement names."""

    kinds: dict[str, str]
    owed: dict[str, int]
    posted: set[str]
    payouts: dict[str, dict[str, Any]]

    def take(self, account: str, amount_fen: int) -> bool:
        if account not in self.owed or amount_fen > self.owed[account]:
            return False
        self.owed[account] -= amount_fen
        return True


def _line(s: bs.Statement, e: bs.StatementEntry) -> StatementLine:
    return StatementLine(f"{s.bank_id}:{e.line_ref}", 0, e.counterparty, e.amount_fen)


def _posting_ids(line: StatementLine) -> list[str]:
    """The transfer ids ledger.events.funds gives a statement line."""
    names = ("contribution-received", "savings-debits-settled")
    return [transfer_id(name, line.statement_id, line.line_no) for name in names]


async def _context(
    engine: Engine, ledger: Ledger, s: bs.Statement, entries: list[bs.StatementEntry]
) -> _Context:
    i, p = schema.institutions.c, schema.payouts.c
    payout_ids = sorted({e.counterparty for e in entries if e.kind == bs.PAYOUT})
    with engine.connect() as connection:
        kinds = {row.id: row.kind for row in connection.execute(select(i.id, i.kind))}
        found = connection.execute(select(schema.payouts).where(p.id.in_(payout_ids)))
        payouts = {row["id"]: dict(row) for row in found.mappings()}
    accounts = {account_id(K.CONTRIBUTIONS_RECEIVABLE, e.counterparty) for e in entries}
    accounts.add(account_id(K.BANK_CLEARING, s.bank_id))
    balances = await ledger.balances(sorted(accounts))
    ids = [i for e in entries for i in _posting_ids(_line(s, e))]
    done = await ledger.lookup_transfers(ids)
    posted = {i for i, x in done.items() if x.result.ok}
    owed = {a: b.balance_fen for a, b in balances.items()}
    return _Context(kinds, owed, posted, payouts)


def _decide(ctx: _Context, s: bs.Statement, e: bs.StatementEntry) -> LineOutcome:
    """Matched (with the transfer that posts or posted it) or to review, with why."""
    line = _line(s, e)
    before = next((i for i in _posting_ids(line) if i in ctx.posted), None)
    if before is not None:  # an interrupted import posted it, but did not record the line
        return LineOutcome(e, "matched", before, "")
    if e.kind == bs.CONTRIBUTION and (e.direction, s.account) == (bs.CREDIT, bs.FUND):
        if ctx.kinds.get(e.counterparty) != "employer_unit":
            return LineOutcome(e, "review", None, f"{e.counterparty} is no employer unit")
        if not ctx.take(account_id(K.CONTRIBUTIONS_RECEIVABLE, e.counterparty), e.amount_fen):
            return LineOutcome(e, "review", None, "more than the unit's contributions owed")
        return LineOutcome(e, "matched", _posting_ids(line)[0], "")
    if e.kind == bs.SAVINGS_DEBITS and (e.direction, s.account) == (bs.CREDIT, bs.EP_FLOAT):
        if e.counterparty != s.bank_id:
            return LineOutcome(e, "review", None, "savings debits of another bank")
        if not ctx.take(account_id(K.BANK_CLEARING, s.bank_id), e.amount_fen):
            return LineOutcome(e, "review", None, "more than the bank's savings debits owed")
        return LineOutcome(e, "matched", _posting_ids(line)[1], "")
    if e.kind == bs.PAYOUT and e.direction == bs.DEBIT:
        return _match_payout(ctx, s, e)
    return LineOutcome(e, "review", None, f"{e.kind}/{e.direction} on {s.account}: unexpected")


def _match_payout(ctx: _Context, s: bs.Statement, e: bs.StatementEntry) -> LineOutcome:
    p = ctx.payouts.get(e.counterparty)
    if p is None:
        return LineOutcome(e, "review", None, f"no payout {e.counterparty}")
    expected = (s.bank_id, SOURCE_OF.get(s.account), e.amount_fen)
    if (p["bank_id"], p["source"], p["amount_fen"]) != expected:
        return LineOutcome(e, "review", None, "the payout's bank, account or amount differs")
    if p["status"] != "paid":
        return LineOutcome(e, "review", None, f"the payout is {p['status']}, not paid")
    return LineOutcome(e, "matched", transfer_id("payout-result", e.counterparty), "")


async def _post(ledger: Ledger, s: bs.Statement, outcome: LineOutcome) -> LineOutcome:
    """Post a matched contribution or savings-debits line (a replay posts nothing)."""
    e = outcome.entry
    if outcome.status != "matched" or e.kind not in (bs.CONTRIBUTION, bs.SAVINGS_DEBITS):
        return outcome
    post = post_contribution_received if e.kind == bs.CONTRIBUTION else post_savings_debits_settled
    result = await post(ledger, _line(s, e))
    if not result.ok:
        return LineOutcome(e, "review", None, f"the ledger refused it: {result.outcome.value}")
    return outcome


def review_item(s: bs.Statement, outcome: LineOutcome) -> ReviewItem:
    e = outcome.entry
    key = transfer_id("review", REASON, s.bank_id, e.line_ref)
    if outcome.status == "conflict":  # one item per distinct content under the reference
        key = transfer_id("review", REASON, s.bank_id, e.line_ref, *_entry_content(s, e))
    return ReviewItem(
        key=key,
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
    *,
    cutover: Cutover,
    file_name: str | None = None,
) -> StatementImport:
    """Check the statement whole (its date no later than the next business date, a file name's
    date the header's), then match, post and record each new line once."""
    try:
        s = await bs.parse_statement(hsm, file_key, data)
        bf.check_dates(s.statement_date, file_name, cutover.date_of(now_us) + dt.timedelta(days=1))
    except bf.BankFileError as error:
        audit_refusal(
            engine, now_us, operator, "recon.statement.refused", file_name or "", str(error)
        )
        raise
    seen = _on_record(engine, s.bank_id, [e.line_ref for e in s.entries])
    conflicts = [
        _conflict(s, e, seen[e.line_ref])
        for e in s.entries
        if e.line_ref in seen and seen[e.line_ref] != _entry_content(s, e)
    ]
    fresh_entries = [e for e in s.entries if e.line_ref not in seen]
    ctx = await _context(engine, ledger, s, fresh_entries)
    decided = [_decide(ctx, s, e) for e in fresh_entries]
    # concurrent: the ledger's group commit makes them a few durable commits
    posted = await asyncio.gather(*(_post(ledger, s, x) for x in decided))
    reviews = [review_item(s, x) for x in [*posted, *conflicts] if x.status != "matched"]
    await asyncio.gather(*(ledger.add_review(item) for item in reviews))
    by_ref = {x.entry.line_ref: x for x in [*posted, *conflicts]}
    outcomes = [by_ref.get(e.line_ref) or LineOutcome(e, "already", None, "") for e in s.entries]
    # a conflict cannot be recorded under its reference: it stays in review until resolved
    fresh = [x for x in outcomes if x.status in ("matched", "review")]
    with write_transaction(engine) as c:
        rows = [
            {
                "bank_id": s.bank_id,
                "statement_date": s.statement_date,
                "line_ref": x.entry.line_ref,
                "kind": KIND_ROW[x.entry.kind],
                "amount_fen": x.entry.amount_fen,
                "counterparty": x.entry.counterparty[:120],
                "status": x.status,
                "matched_transfer_id": x.transfer_id,
                "file_name": bs.statement_name(s),
                "imported_at_us": now_us,
            }
            for x in fresh
        ]
        if rows:
            statement = insert(schema.bank_statement_lines).prefix_with(
                "OR IGNORE", dialect="sqlite"
            )
            c.execute(statement, rows)
        audit(
            c,
            now_us,
            operator,
            "recon.statement",
            bs.statement_name(s),
            bank=s.bank_id,
            date=s.statement_date,
            new=len(fresh),
            matched=sum(1 for x in fresh if x.status == "matched"),
            review=sum(1 for x in fresh if x.status == "review"),
            conflict=len(conflicts),
        )
    # import order does not matter: payout lines waiting for their return file
    return StatementImport(s, tuple(outcomes), rematch_payouts(engine, operator, now_us, s.bank_id))


# -- import order (specs/dayend-files.md, "Import order") ---------------------------------------
# A PAYOUT line imported before the return file that says its payout was paid goes to review
# ("the payout is released, not paid"). Once the payout is paid, the line waiting in review is
# matched again: called by both imports (the return file's, and any later statement of the bank,
# its own re-import included). Re-matched when the payout is now paid, was sent to the line's
# bank from the line's account for the line's amount: the line becomes matched (the payout's
# result transfer; nothing posts) and its review item, if still open, is accepted by the
# importing operator, with an audit entry. A line whose item an operator acted on is left alone.
_L = schema.bank_statement_lines.c
_P = schema.payouts.c
LINES_MAX = 10_000  # re-matched per call; the rest at the next import


def _account(file_name: str) -> str:
    """The account of a recorded line: its file name is ``bs.statement_name``'s (the centre's
    canonical name, not the incoming file's), whose last part is the account."""
    return file_name.rsplit(".", 1)[0].rsplit("_", 1)[-1]


def rematch_payouts(engine: Engine, operator: str, now_us: int, bank_id: str | None = None) -> int:
    """Re-match the PAYOUT statement lines in review whose payout is now paid (of one bank, or
    all); how many were re-matched."""
    joined = schema.bank_statement_lines.join(
        schema.payouts,
        and_(_P.id == _L.counterparty, _P.bank_id == _L.bank_id, _P.amount_fen == _L.amount_fen),
    )
    statement = (
        select(_L.seq, _L.bank_id, _L.line_ref, _L.file_name, _P.id, _P.source)
        .select_from(joined)
        .where(_L.kind == KIND_ROW[bs.PAYOUT], _L.status == "review", _P.status == "paid")
        .order_by(_L.seq)
        .limit(LINES_MAX)
    )
    if bank_id is not None:
        statement = statement.where(_L.bank_id == bank_id)
    queue = ReviewQueue(engine)
    done = 0
    with write_transaction(engine) as c:
        for seq, bank, line_ref, file_name, payout_id, source in c.execute(statement).fetchall():
            if SOURCE_OF.get(_account(file_name)) != source:
                continue
            key = transfer_id("review", REASON, bank, line_ref)
            try:
                item = queue.find(key, c)
            except ReviewError:
                item = None
            if item is not None and item.status != Status.OPEN.value:
                continue  # an operator acted on it: theirs to finish
            if item is not None:
                set_status(c, item, Status.ACCEPTED, operator, now_us)
            c.execute(
                update(schema.bank_statement_lines)
                .where(_L.seq == seq, _L.status == "review")
                .values(
                    status="matched", matched_transfer_id=transfer_id("payout-result", payout_id)
                )
            )
            detail = {"bank": bank, "line_ref": line_ref, "payout": payout_id}
            audit(c, now_us, operator, "recon.rematched", key, **detail)
            done += 1
    return done

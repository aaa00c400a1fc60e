"""Importing a bank's return file 回盘 for a released payout file (DESIGN §5, specs/dayend-files.md
"Return files"): each payment paid or returned with a reason.

- paid: payouts in flight → fund bank account (insurance) / EP float (EP money);
- returned: payouts in flight → back to the payable (``ledger.events.resolve_payout``), so the next
  day-end's payout re-issues it once the account is corrected; the payout row says ``returned``
  and a review item (reason ``payout_returned``) asks for the correction. When a later payout of
  the same payable is released, the returned one becomes ``reissued`` and the new one names it
  (``reissue_of``).

The file is checked whole before anything posts: MAC under the bank's file key, trailer, the
payout file it answers (name, bank and MAC), every line one of that file's payments with its
amount, each once, every payment answered. A payment already answered the same way posts
nothing (a second import changes nothing); answered the other way, the file is refused.
Posting comes before the rows are marked, and both are idempotent, so a crash between them is
repaired by importing the file again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, select, update

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger import schema
from ledger.core import Ledger, ReviewItem, transfer_id
from ledger.dayend.bank_files import BankFileError, check_dates
from ledger.dayend.calendar import Cutover
from ledger.dayend.recon_statement import rematch_payouts
from ledger.dayend.return_file import (
    PAID,
    REASONS,
    RETURNED,
    ReturnFile,
    masked_card,
)
from ledger.dayend.return_file import parse_return as parse_file
from ledger.dayend.review_queue import audit, audit_refusal
from ledger.events.funds import resolve_payout
from ledger.medical.sql_store import write_transaction

REASON = "payout_returned"
_P = schema.payouts.c
_STATUS = {PAID: "paid", RETURNED: "returned"}


@dataclass(frozen=True)
class ReturnImport:
    file: ReturnFile
    paid: int  # answered now: paid
    returned: int  # answered now: returned (each now a review item)
    already: int  # answered the same way by an earlier import: nothing posted
    reissued: int  # earlier returned payouts found re-issued by a later payout
    rematched: int = 0  # statement lines waiting in review for these payouts, matched now
    answered_now: frozenset[str] = frozenset()  # the payout ids this import answered

    @property
    def changed_nothing(self) -> bool:
        return not self.answered_now and not self.reissued and not self.rematched


def _payout_file(engine: Engine, r: ReturnFile) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    f = schema.payout_files.c
    with engine.connect() as c:
        found = c.execute(select(schema.payout_files).where(f.name == r.payout_file))
        row = found.mappings().first()
        if row is None:
            raise BankFileError(f"no payout file {r.payout_file} on record")
        lines = c.execute(select(schema.payouts).where(_P.file_name == r.payout_file))
        return dict(row), [dict(x) for x in lines.mappings()]


def check(r: ReturnFile, sent: dict[str, Any], payouts: list[dict[str, Any]]) -> list[str]:
    """Refuse a return file that does not answer this payout file exactly; the ids already
    answered the same way."""
    if r.return_date < sent["business_date"]:
        raise BankFileError(
            f"the return file is dated {r.return_date}, before {r.payout_file} it answers "
            f"(business date {sent['business_date']})"
        )
    if sent["bank_id"] != r.bank_id:
        raise BankFileError(f"{r.payout_file} was sent to bank {sent['bank_id']}, not {r.bank_id}")
    if sent["status"] != "released":
        raise BankFileError(f"{r.payout_file} is {sent['status']}: it was never released")
    if sent["mac"].upper() != r.payout_mac.upper():
        raise BankFileError(f"the return file answers another version of {r.payout_file} (MAC)")
    by_id = {p["id"]: p for p in payouts}
    seen: set[str] = set()
    already = []
    for number, x in enumerate(r.lines, 1):
        p = by_id.get(x.payout_id)
        if p is None or x.payout_id in seen:
            raise BankFileError(f"line {number}: {x.payout_id} is not a payment of the file once")
        seen.add(x.payout_id)
        if (p["line_no"], p["amount_fen"]) != (x.payout_line, x.amount_fen):
            raise BankFileError(f"line {number}: {x.payout_id}'s line or amount differs")
        if p["kind"] == "refund" and x.account_no != masked_card(p["account_no"]):
            raise BankFileError(
                f"line {number}: {x.payout_id} is a refund to a card: its account number is "
                "carried masked (first 6 and last 4 digits), never in clear"
            )
        status = p["status"]
        wanted = _STATUS[x.status]
        if status == wanted or (status == "reissued" and wanted == "returned"):
            already.append(x.payout_id)
        elif status != "released":
            raise BankFileError(f"line {number}: {x.payout_id} is already {status}")
    if missing := sorted(set(by_id) - seen):
        raise BankFileError(f"payments not answered: {', '.join(missing[:5])}")
    return already


def review_item(r: ReturnFile, payout_id: str) -> ReviewItem:
    x = next(line for line in r.lines if line.payout_id == payout_id)
    why = f"{x.reason_code} {REASONS.get(x.reason_code, '')}: {x.reason}".strip()
    return ReviewItem(
        key=transfer_id("review", REASON, payout_id),
        reason=REASON,
        reference=f"payout|{payout_id}|{x.payee_id}|{r.payout_file}",
        amount_fen=x.amount_fen,
        detail=f"returned by bank {r.bank_id} on {r.return_date}: {why}; correct the settlement "
        "account, the next day-end re-issues it",
    )


async def import_returns(
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
) -> ReturnImport:
    """Check the whole file (its date from the payout file's business date to the next
    business date, a file name's date the header's), post each new answer, mark the payouts,
    review the returned."""
    try:
        r = await parse_file(hsm, file_key, data)
        check_dates(r.return_date, file_name, cutover.date_of(now_us) + dt.timedelta(days=1))
        sent, payouts = _payout_file(engine, r)
        already = set(check(r, sent, payouts))
    except BankFileError as error:
        audit_refusal(
            engine, now_us, operator, "recon.returns.refused", file_name or "", str(error)
        )
        raise
    fresh = [x for x in r.lines if x.payout_id not in already]
    # concurrent: the ledger's group commit makes them a few durable commits
    results = await asyncio.gather(
        *(resolve_payout(ledger, x.payout_id, paid=x.status == PAID) for x in fresh)
    )
    for x, result in zip(fresh, results, strict=True):
        if not result.ok:
            raise BankFileError(f"the ledger refused {x.payout_id}: {result.outcome.value}")
    returned = [review_item(r, x.payout_id) for x in fresh if x.status == RETURNED]
    await asyncio.gather(*(ledger.add_review(item) for item in returned))
    with write_transaction(engine) as c:
        for x in fresh:
            reason = f"{x.reason_code} {x.reason}".strip() if x.status == RETURNED else ""
            c.execute(
                update(schema.payouts)
                .where(_P.id == x.payout_id, _P.status == "released")
                .values(status=_STATUS[x.status], reason=reason[:120], updated_at_us=now_us)
            )
        summary = {
            "file": r.payout_file,
            "bank": r.bank_id,
            "date": r.return_date,
            "new": len(fresh),
            "already": len(already),
        }
        audit(c, now_us, operator, "recon.returns", r.payout_file, **summary)
    reissued = link_reissues(engine, now_us)
    rematched = rematch_payouts(engine, operator, now_us, r.bank_id)
    paid = sum(1 for x in fresh if x.status == PAID)
    now = frozenset(x.payout_id for x in fresh)
    return ReturnImport(r, paid, len(fresh) - paid, len(already), reissued, rematched, now)


def link_reissues(engine: Engine, now_us: int) -> int:
    """Each returned payout whose payable a later payout (of a date that closed after the
    money came back) released again becomes ``reissued``, the later one naming it in
    ``reissue_of``. Returns how many were linked now."""
    later = schema.payouts.alias("later")
    ret = schema.payouts.alias("ret")
    same_party = and_(
        later.c.source == ret.c.source,
        later.c.kind == ret.c.kind,
        later.c.institution_id.is_not_distinct_from(ret.c.institution_id),
        later.c.cardholder_id.is_not_distinct_from(ret.c.cardholder_id),
        later.c.business_date > ret.c.business_date,
        later.c.status.in_(("released", "paid", "returned", "reissued")),
    )
    day = schema.business_days.c
    # a later payout re-issues the money only if its date closed after the money came back
    closed_after = and_(
        day.business_date == later.c.business_date, day.cutover_at_us >= ret.c.updated_at_us
    )
    statement = (
        select(ret.c.id, later.c.id)
        .select_from(ret.join(later, same_party).join(schema.business_days, closed_after))
        .where(ret.c.status == "returned")
        .order_by(ret.c.id, later.c.business_date)
    )
    linked = 0
    with write_transaction(engine) as c:
        done: set[str] = set()
        for returned_id, later_id in c.execute(statement).fetchall():
            if returned_id in done:
                continue
            done.add(returned_id)
            c.execute(
                update(schema.payouts)
                .where(_P.id == returned_id, _P.status == "returned")
                .values(status="reissued", updated_at_us=now_us)
            )
            c.execute(
                update(schema.payouts)
                .where(_P.id == later_id, _P.reissue_of.is_(None))
                .values(reissue_of=returned_id)
            )
            detail = json.dumps({"reissued_by": later_id})
            c.execute(
                schema.audit_log.insert().values(
                    at_us=now_us,
                    actor="dayend",
                    action="recon.reissued",
                    subject=returned_id,
                    detail=detail,
                )
            )
            linked += 1
    return linked

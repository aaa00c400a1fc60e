"""Statements for the parties (DESIGN §3.6): per designated medical institution, what was settled
over a range of business dates (by kind of money, by date, the insurance shares by person
category and coverage class) and what was paid out; per employer unit, its contributions (by
period, received, still owed) and its members' spending (bills by category and class, card debits
by purse and kind of institution). Rendered by `ledger.dayend.statements_render`.

Business dates are the day-end's (`ledger.dayend.calendar.Cutover`): a transfer belongs to the
date of its posted time. Reads go by account (indexed), one read transaction, so a statement is
consistent while the switch keeps posting. Nothing reads the clock: the same ledger and range give
the same statement, row for row.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from ledger import schema
from ledger.core import transfer_id
from ledger.dayend.calendar import Cutover
from ledger.dayend.recon_adjustments import ADJUSTMENT_CODE
from ledger.dayend.statements_render import PartyStatement, Section
from ledger.events.common import TransferCode as C
from ledger.medical.codec import split_from_dict
from ledger.medical.split import Share
from ledger.medical.tables import medical_bills

CHUNK = 500

#: (code, the payable on the debit side?) → what the movement is, for an institution's payables
INSTITUTION_LABELS = {
    (int(C.CARD_DEBIT), False): "card debits",
    (int(C.BILL_POOLED_SHARE), False): "pooled-fund shares of bills",
    (int(C.VOID_POOLED), True): "voids: pooled share back",
    (int(C.VOID_PERSONAL), True): "voids: personal account share back",
    (int(C.VOID_EP_REFUND), True): "voids: refunds to cardholders",
    (int(C.PAYOUT), True): "payouts sent",
    (int(C.PAYOUT_RETURNED), False): "payouts returned by the bank",
    (ADJUSTMENT_CODE, True): "review adjustments (out)",
    (ADJUSTMENT_CODE, False): "review adjustments (in)",
}
SETTLED = (
    int(C.CARD_DEBIT),
    int(C.BILL_POOLED_SHARE),
    int(C.VOID_POOLED),
    int(C.VOID_PERSONAL),
    int(C.VOID_EP_REFUND),
)
MONEY = {"payins": "insurance", "payep": "EP"}


class StatementError(ValueError):
    """No such party, or a range that cannot be used."""


@dataclass(frozen=True)
class Move:
    debit: str
    credit: str
    amount_fen: int
    code: int
    reference: str
    posted_at_us: int


def _moves(c: Connection, accounts: Sequence[str], start: int, end: int) -> list[Move]:
    """Posted transfers touching `accounts` in [start, end), oldest first, once each."""
    t = schema.transfers.c
    found: dict[int, Move] = {}
    for side in (t.debit_account_id, t.credit_account_id):
        for at in range(0, len(accounts), CHUNK):
            statement = select(
                t.seq,
                t.debit_account_id,
                t.credit_account_id,
                t.amount_fen,
                t.code,
                t.reference,
                t.posted_at_us,
            ).where(
                side.in_(accounts[at : at + CHUNK]),
                t.result == 0,
                t.posted_at_us >= start,
                t.posted_at_us < end,
            )
            for row in c.execute(statement):
                found[int(row.seq)] = Move(*row[1:])
    return [found[seq] for seq in sorted(found)]


def _after(c: Connection, account: str, end: int) -> int:
    """The account's credits less debits posted at or after `end` (to undo them)."""
    total = 0
    for move in _moves(c, [account], end, 2**62):
        total += move.amount_fen if move.credit == account else -move.amount_fen
    return total


def _balance_at(c: Connection, account: str, end: int) -> int:
    """Credits less debits before `end`."""
    a = schema.accounts.c
    row = c.execute(select(a.debits_posted, a.credits_posted).where(a.id == account)).first()
    if row is None:
        return 0
    return int(row.credits_posted) - int(row.debits_posted) - _after(c, account, end)


def _window(cutover: Cutover, date_from: dt.date, date_to: dt.date) -> tuple[int, int]:
    if date_to < date_from:
        raise StatementError(f"the range ends ({date_to}) before it starts ({date_from})")
    if (date_to - date_from).days > 366:
        raise StatementError("a statement covers at most a year")
    return cutover.window(date_from)[0], cutover.window(date_to)[1]


def _party(c: Connection, party_id: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    i = schema.institutions.c
    row = c.execute(select(schema.institutions).where(i.id == party_id)).mappings().first()
    if row is None or row["kind"] not in kinds:
        raise StatementError(f"no {' or '.join(kinds)} {party_id}")
    return dict(row)


# -- splits by category and class ----------------------------------------------------------------
def _splits(c: Connection, bill_ids: Iterable[str]) -> dict[str, Any]:
    ids = sorted(set(bill_ids))
    b = medical_bills.c
    found = {}
    for at in range(0, len(ids), CHUNK):
        rows = c.execute(select(b.bill_id, b.split_json).where(b.bill_id.in_(ids[at : at + CHUNK])))
        found.update({row.bill_id: split_from_dict(json.loads(row.split_json)) for row in rows})
    return found


def _by_class(splits: Iterable[tuple[Any, int]]) -> tuple[tuple[str | int, ...], ...]:
    """(category, class, bills, personal account, pooled, self-pay) rows from (split, sign)."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for split, sign in splits:
        category = split.special_category or split.category.value
        seen: set[tuple[str, str]] = set()
        for line in split.lines:
            key = (category, line.coverage.value if line.coverage else "-")
            row = totals[key]
            if key not in seen:
                row[0] += sign
                seen.add(key)
            row[1] += sign * line.share_fen(Share.PERSONAL_ACCOUNT)
            row[2] += sign * line.share_fen(Share.POOLED)
            row[3] += sign * line.share_fen(Share.SELF_PAY)
    return tuple((k[0], k[1], *v) for k, v in sorted(totals.items()))


CLASS_COLUMNS = ("category", "class", "bills", "personal_account_fen", "pooled_fen", "self_pay_fen")


# -- institutions ---------------------------------------------------------------------------------
def institution_statement(
    engine: Engine, institution_id: str, date_from: dt.date, date_to: dt.date, cutover: Cutover
) -> PartyStatement:
    start, end = _window(cutover, date_from, date_to)
    payables = [f"payins:{institution_id}", f"payep:{institution_id}"]
    with engine.connect() as c, c.begin():
        party = _party(c, institution_id, ("hospital", "pharmacy"))
        moves = _moves(c, payables, start, end)
        bills = [
            (m.reference.partition("|")[2], -1 if m.code == C.VOID_POOLED else 1)
            for m in moves
            if m.code in (C.BILL_POOLED_SHARE, C.VOID_POOLED)
        ]
        splits = _splits(c, (b for b, _ in bills))
        balances = [(MONEY[a.partition(":")[0]], _balance_at(c, a, end)) for a in payables]
        payouts = _payouts(c, institution_id, date_from, date_to)
    sections = (
        _summary(moves, payables),
        _per_date(moves, payables, cutover),
        Section(
            "Insurance shares of completed bills by category and coverage class",
            CLASS_COLUMNS,
            _by_class((splits[b], s) for b, s in bills if b in splits),
            "bills whose pooled share posted in the range; voids counted negative",
        ),
        Section(
            "Payouts",
            (
                "business_date",
                "payout",
                "money",
                "bank",
                "account",
                "amount_fen",
                "status",
                "reason",
                "reissue_of",
            ),
            payouts,
        ),
        Section("Payable at the end of the range", ("money", "amount_fen"), tuple(balances)),
    )
    return PartyStatement(
        "institution",
        institution_id,
        party["name"],
        date_from.isoformat(),
        date_to.isoformat(),
        sections,
    )


def _summary(moves: Sequence[Move], payables: Sequence[str]) -> Section:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for m in moves:
        for account in payables:
            on_debit = m.debit == account
            if not on_debit and m.credit != account:
                continue
            label = INSTITUTION_LABELS.get((m.code, on_debit), f"other (code {m.code})")
            row = totals[(MONEY[account.partition(":")[0]], label)]
            row[0] += 1
            row[1] += -m.amount_fen if on_debit else m.amount_fen
    rows = tuple((money, label, n, fen) for (money, label), (n, fen) in sorted(totals.items()))
    return Section(
        "Movements of the payables",
        ("money", "what", "count", "amount_fen"),
        rows,
        "money owed to the institution: credits positive, debits negative",
    )


def _per_date(moves: Sequence[Move], payables: Sequence[str], cutover: Cutover) -> Section:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for m in moves:
        account = m.credit if m.credit in payables else m.debit
        sign = 1 if m.credit == account else -1
        key = (cutover.date_of(m.posted_at_us).isoformat(), MONEY[account.partition(":")[0]])
        if m.code in SETTLED:
            totals[key][0] += sign * m.amount_fen
        elif m.code in (C.PAYOUT, C.PAYOUT_RETURNED):
            totals[key][1] -= sign * m.amount_fen
    rows = tuple((d, money, s, p) for (d, money), (s, p) in sorted(totals.items()))
    return Section(
        "By business date",
        ("business_date", "money", "settled_fen", "paid_out_fen"),
        rows,
        "settled: card debits and pooled shares less voids; paid out: payouts "
        "sent less those returned",
    )


def _payouts(
    c: Connection, institution_id: str, date_from: dt.date, date_to: dt.date
) -> tuple[tuple[str | int, ...], ...]:
    p = schema.payouts.c
    statement = (
        select(
            p.business_date,
            p.id,
            p.source,
            p.bank_id,
            p.account_no,
            p.amount_fen,
            p.status,
            p.reason,
            p.reissue_of,
        )
        .where(
            p.institution_id == institution_id,
            p.business_date >= date_from.isoformat(),
            p.business_date <= date_to.isoformat(),
        )
        .order_by(p.business_date, p.id)
    )
    return tuple(
        (
            r.business_date,
            r.id,
            r.source,
            r.bank_id,
            r.account_no,
            int(r.amount_fen),
            r.status,
            r.reason,
            r.reissue_of or "",
        )
        for r in c.execute(statement)
    )


# -- employer units -------------------------------------------------------------------------------
def unit_statement(
    engine: Engine, unit_id: str, date_from: dt.date, date_to: dt.date, cutover: Cutover
) -> PartyStatement:
    start, end = _window(cutover, date_from, date_to)
    receivable = f"contrib:{unit_id}"
    with engine.connect() as c, c.begin():
        party = _party(c, unit_id, ("employer_unit",))
        moves = _moves(c, [receivable], start, end)
        owed = _balance_at(c, receivable, end)
        members, serials = _members(c, unit_id)
        bills = _member_bills(c, members, start, end)
        debits = _member_debits(c, serials, start, end)
    contributed: dict[str, list[Any]] = defaultdict(lambda: [set(), 0, 0])
    received = []
    for m in moves:
        if m.code in (C.CONTRIBUTION_PERSONAL, C.CONTRIBUTION_POOLED):
            _, _, period, holder = m.reference.split("|")
            row = contributed[period]
            row[0].add(holder)
            row[1 if m.code == C.CONTRIBUTION_PERSONAL else 2] += m.amount_fen
        elif m.code == C.CONTRIBUTION_RECEIVED:
            day = cutover.date_of(m.posted_at_us).isoformat()
            received.append((day, m.reference, m.amount_fen))
    periods = tuple((p, len(r[0]), r[1], r[2], r[1] + r[2]) for p, r in sorted(contributed.items()))
    sections = (
        Section(
            "Contributions by period",
            ("period", "members", "personal_accounts_fen", "pooled_fund_fen", "total_fen"),
            periods,
        ),
        Section(
            "Contributions received (bank statements)",
            ("business_date", "reference", "amount_fen"),
            tuple(received),
        ),
        Section("Contributions owed at the end of the range", ("amount_fen",), ((owed,),)),
        Section(
            "Members' bills by category and coverage class",
            CLASS_COLUMNS,
            _by_class(bills),
            f"bills of the unit's {len(members)} members whose pooled share posted in the range;"
            " voids counted negative",
        ),
        Section(
            "Members' card debits",
            ("purse", "institution_kind", "count", "amount_fen"),
            debits,
            "debits confirmed by the card's TAC, by purse and kind of institution",
        ),
    )
    return PartyStatement(
        "unit", unit_id, party["name"], date_from.isoformat(), date_to.isoformat(), sections
    )


def _members(c: Connection, unit_id: str) -> tuple[list[str], list[str]]:
    h, k = schema.cardholders.c, schema.cards.c
    holders = sorted(c.execute(select(h.id).where(h.unit_id == unit_id)).scalars())
    serials = sorted(
        c.execute(
            select(k.application_serial)
            .join(schema.cardholders, k.cardholder_id == h.id)
            .where(h.unit_id == unit_id)
        ).scalars()
    )
    return holders, serials


def _member_bills(
    c: Connection, members: Sequence[str], start: int, end: int
) -> list[tuple[Any, int]]:
    """(split, +1) for each member's bill whose pooled share posted in [start, end), (split, -1)
    for each whose void took it back: anchored on the ledger, so a later void never changes the
    statement of an earlier range (the ids of ledger.events.purchases)."""
    b, t = medical_bills.c, schema.transfers.c
    splits: dict[str, str] = {}
    for at in range(0, len(members), CHUNK):
        statement = select(b.bill_id, b.split_json).where(b.person_id.in_(members[at : at + CHUNK]))
        splits.update((row.bill_id, row.split_json) for row in c.execute(statement))
    moves = {transfer_id("bill-pooled", bill): (bill, 1) for bill in splits}
    moves |= {transfer_id("void-pooled", bill): (bill, -1) for bill in splits}
    ids = sorted(moves)
    found = []
    for at in range(0, len(ids), CHUNK):
        statement = select(t.id).where(
            t.id.in_(ids[at : at + CHUNK]),
            t.result == 0,
            t.posted_at_us >= start,
            t.posted_at_us < end,
        )
        found += [moves[row.id] for row in c.execute(statement)]
    return [(split_from_dict(json.loads(splits[bill])), sign) for bill, sign in sorted(found)]


def _member_debits(
    c: Connection, serials: Sequence[str], start: int, end: int
) -> tuple[tuple[str | int, ...], ...]:
    accounts = [f"{purse}:{s}" for s in serials for purse in ("ed", "ep")]
    kinds = {
        r.id: r.kind
        for r in c.execute(select(schema.institutions.c.id, schema.institutions.c.kind))
    }
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for m in _moves(c, accounts, start, end):
        if m.code != C.CARD_DEBIT:
            continue
        purse = m.debit.partition(":")[0].upper()
        row = totals[(purse, kinds.get(m.credit.partition(":")[2], "?"))]
        row[0] += 1
        row[1] += m.amount_fen
    return tuple((p, k, n, fen) for (p, k), (n, fen) in sorted(totals.items()))

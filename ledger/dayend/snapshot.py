"""What day-end reads for a business date, in one read transaction (a consistent snapshot while
the switch keeps posting): only transfers posted before the cut-over instant count.

Cold path, on the ledger's SQLite file through SQLAlchemy (SQL set-based: one grouped scan of the
date's transfers, balances at the cut-over as the current balance less what posted after it).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from ledger.dayend.calendar import Cutover
from ledger.events.common import TransferCode

#: Kinds with one account per card or cardholder: the date's flows group them by kind only.
PER_CARD_KINDS = ("ed", "ep", "pf", "edload", "epload", "unload", "refund", "contrib")
PAYABLE_KINDS = ("payins", "payep", "refund")
IN_DOUBT_KINDS = ("edload", "epload", "unload")
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Flow:
    """The date's transfers of one code between two accounts (per-card accounts by kind: 'ed:')."""

    code: int
    debit: str
    credit: str
    count: int
    amount_fen: int


@dataclass(frozen=True, slots=True)
class Institution:
    id: str
    kind: str
    name: str
    bank_id: str | None
    account_no: str | None


@dataclass(frozen=True, slots=True)
class InDoubt:
    account: str  # edload:<serial> | epload:<serial> | unload:<serial>
    amount_fen: int
    since_us: int  # when it last went from nothing to something in doubt


@dataclass(frozen=True, slots=True)
class RefundTarget:
    """Where a cardholder's refunds go: the bank that funded their EP, the card it debits."""

    cardholder_id: str
    name: str
    bank_id: str | None
    card_no: str | None


@dataclass(frozen=True, slots=True)
class PooledPart:
    institution_id: str
    category: str  # the person's category, or the applied special category
    coverage: str  # 甲 | 乙 | "-" (what the bill's split does not attribute)
    amount_fen: int  # voids negative
    bills: int


@dataclass(frozen=True)
class Snapshot:
    business_date: dt.date
    start_us: int
    end_us: int
    flows: tuple[Flow, ...]
    payables: dict[str, int]  # payable account → what day-end may pay from it now
    institutions: dict[str, Institution]
    in_doubt: tuple[InDoubt, ...]
    pooled: tuple[PooledPart, ...]
    refund_targets: dict[str, RefundTarget]
    late_uploads: tuple[int, int]  # (count, fen) of offline records with an earlier card date
    notes: tuple[str, ...] = field(default=())


def _prefix(column: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"split_part({column}, ':', 1)"
    return f"substr({column}, 1, instr({column}, ':') - 1)"


def _grouped(column: str, dialect: str) -> str:
    kinds = ", ".join(f"'{k}'" for k in PER_CARD_KINDS)
    prefix = _prefix(column, dialect)
    return f"CASE WHEN {prefix} IN ({kinds}) THEN {prefix} || ':' ELSE {column} END"


def read(engine: Engine, date: dt.date, cutover: Cutover) -> Snapshot:
    """The snapshot of `date` (call it only after the cut-over has passed)."""
    start, end = cutover.window(date)
    with engine.connect() as connection, connection.begin():
        flows = tuple(_flows(connection, start, end))
        payables = _payables(connection, date.isoformat(), end)
        institutions = _institutions(connection)
        in_doubt = tuple(_in_doubt(connection, end))
        pooled, notes = _pooled(connection, start, end)
        refunds = [a.partition(":")[2] for a, v in payables.items() if a.startswith("refund:")
                   and v > 0]
        targets = _refund_targets(connection, refunds, end)
        late = _late_uploads(connection, start, end, cutover)
    return Snapshot(date, start, end, flows, payables, institutions, in_doubt, pooled, targets,
                    late, notes)


def _rows(connection: Connection, sql: str, *params: Any) -> list[Any]:
    return list(connection.exec_driver_sql(sql, params if params else ()).fetchall())


def _flows(connection: Connection, start: int, end: int) -> Iterator[Flow]:
    dialect = connection.dialect.name
    debit, credit = _grouped("debit_account_id", dialect), _grouped("credit_account_id", dialect)
    sql = (f"SELECT code, {debit} AS d, {credit} AS c, COUNT(*), SUM(amount_fen) FROM transfers "
           "WHERE result = 0 AND posted_at_us >= ? AND posted_at_us < ? AND code <> ? "
           "GROUP BY code, d, c ORDER BY code, d, c")
    # Payouts are reported by their own business date (the payouts table), not by when the
    # checker's approval posted them.
    for code, d, c, count, amount in _rows(connection, sql, start, end, int(TransferCode.PAYOUT)):
        yield Flow(int(code), d, c, int(count), int(amount))


def _payables(connection: Connection, date: str, end: int) -> dict[str, int]:
    """Each payable's balance at the cut-over, less earlier dates' payouts posted after it."""
    kinds = ", ".join(f"'{k}'" for k in PAYABLE_KINDS)
    balances = {
        account: int(credits) - int(debits)
        for account, debits, credits in _rows(
            connection,
            f"SELECT id, debits_posted, credits_posted FROM accounts WHERE kind IN ({kinds})")
    }
    likes = " OR ".join(f"{{side}} LIKE '{k}:%'" for k in PAYABLE_KINDS)
    for side, sign in (("debit_account_id", 1), ("credit_account_id", -1)):
        sql = (f"SELECT {side}, SUM(amount_fen) FROM transfers WHERE result = 0 "
               f"AND posted_at_us >= ? AND ({likes.format(side=side)}) GROUP BY {side}")
        for account, amount in _rows(connection, sql, end):
            balances[account] = balances.get(account, 0) + sign * int(amount)
    # A payout belongs to its business date, whenever its approval posted it: an earlier
    # date's posted after the cut-over is still owed no more; this date's (or a later one's)
    # posted before it (a clock set back, a drill) is still to be paid by this date.
    sql = ("SELECT t.debit_account_id, SUM(t.amount_fen), p.business_date < ?, "
           "t.posted_at_us < ? FROM payouts p JOIN transfers t ON t.id = p.transfer_id "
           "WHERE t.result = 0 GROUP BY t.debit_account_id, p.business_date < ?, "
           "t.posted_at_us < ?")
    for account, amount, earlier, before in _rows(connection, sql, date, end, date, end):
        if bool(earlier) != bool(before):
            sign = -1 if earlier else 1
            balances[account] = balances.get(account, 0) + sign * int(amount)
    return balances


def _institutions(connection: Connection) -> dict[str, Institution]:
    sql = ("SELECT id, kind, name, settlement_bank_id, settlement_account_no FROM institutions "
           "ORDER BY id")
    return {row[0]: Institution(*row) for row in _rows(connection, sql)}


def _in_doubt(connection: Connection, end: int) -> Iterator[InDoubt]:
    kinds = ", ".join(f"'{k}'" for k in IN_DOUBT_KINDS)
    current = {
        account: int(credits) - int(debits)
        for account, debits, credits in _rows(
            connection,
            f"SELECT id, debits_posted, credits_posted FROM accounts WHERE kind IN ({kinds}) "
            "AND debits_posted <> credits_posted")
    }
    # Accounts balanced now may not have been at the cut-over: add those moved after it.
    likes = " OR ".join(f"credit_account_id LIKE '{k}:%' OR debit_account_id LIKE '{k}:%'"
                        for k in IN_DOUBT_KINDS)
    later = _rows(connection, "SELECT debit_account_id, credit_account_id, amount_fen FROM "
                  f"transfers WHERE result = 0 AND posted_at_us >= ? AND ({likes})", end)
    for debit, credit, amount in later:
        current[credit] = current.get(credit, 0) - int(amount)
        current[debit] = current.get(debit, 0) + int(amount)
    for account in sorted(a for a, v in current.items() if v and a.split(":")[0] in IN_DOUBT_KINDS):
        moves = _rows(connection, "SELECT debit_account_id, amount_fen, posted_at_us FROM "
                      "transfers WHERE result = 0 AND posted_at_us < ? AND (debit_account_id = ? "
                      "OR credit_account_id = ?) ORDER BY seq", end, account, account)
        running, since = 0, 0
        for debit, amount, posted in moves:
            before = running
            running += -int(amount) if debit == account else int(amount)
            if before == 0 and running != 0:
                since = int(posted)
        if running:
            yield InDoubt(account, running, since)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for at in range(0, len(items), CHUNK):
        yield items[at : at + CHUNK]


def _pooled(connection: Connection, start: int, end: int) -> tuple[tuple[PooledPart, ...],
                                                                   tuple[str, ...]]:
    """The date's pooled-fund shares (bills completed, less voids) by institution, category and
    class, from each bill's split."""
    codes = (int(TransferCode.BILL_POOLED_SHARE), int(TransferCode.VOID_POOLED))
    moves = _rows(connection, "SELECT code, reference, debit_account_id, credit_account_id, "
                  "amount_fen FROM transfers WHERE result = 0 AND posted_at_us >= ? AND "
                  "posted_at_us < ? AND code IN (?, ?) ORDER BY seq", start, end, *codes)
    bill_ids = sorted({ref.partition("|")[2] for _, ref, _, _, _ in moves})
    splits: dict[str, str] = {}
    for chunk in _chunks(bill_ids):
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT bill_id, split_json FROM medical_bills WHERE bill_id IN ({marks})"
        splits.update((row[0], row[1]) for row in _rows(connection, sql, *chunk))
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    notes = []
    for code, ref, debit, credit, amount in moves:
        sign = 1 if code == codes[0] else -1
        institution = (credit if sign > 0 else debit).partition(":")[2]
        bill_id = ref.partition("|")[2]
        text = splits.get(bill_id)
        parts = _split_parts(text) if text else {}
        if text is None:
            notes.append(f"bill {bill_id}: no split on file; its pooled share unattributed")
        rest = int(amount)
        for (category, coverage), part in sorted(parts.items()):
            share = min(part, rest)
            rest -= share
            _add(totals[(institution, category, coverage)], sign * share)
        if rest:
            category = next(iter(parts))[0] if parts else "-"
            _add(totals[(institution, category, "-")], sign * rest)
    pooled = tuple(PooledPart(i, c, k, v[0], v[1]) for (i, c, k), v in sorted(totals.items()))
    return pooled, tuple(notes)


def _add(total: list[int], amount: int) -> None:
    total[0] += amount
    total[1] += 1


def _split_parts(text: str) -> dict[tuple[str, str], int]:
    """{(category, coverage): pooled fen} of a stored split (ledger.medical.codec)."""
    split = json.loads(text)
    category = split.get("special_category") or split["category"]
    parts: dict[tuple[str, str], int] = defaultdict(int)
    for line in split["lines"]:
        pooled = sum(int(p["amount_fen"]) for p in line["parts"] if p["share"] == "pooled")
        if pooled:
            parts[(category, line["coverage"] or "-")] += pooled
    if not parts:
        parts[(category, "-")] = 0
    return dict(parts)


def _refund_targets(connection: Connection, cardholders: Iterable[str],
                    end: int) -> dict[str, RefundTarget]:
    targets = {}
    load = int(TransferCode.LOAD_INTO_DOUBT)
    for holder in sorted(cardholders):
        names = _rows(connection, "SELECT name FROM cardholders WHERE id = ?", holder)
        cards = _rows(connection, "SELECT card_no, application_serial FROM cards WHERE "
                      "cardholder_id = ? ORDER BY card_no", holder)
        best: tuple[int, str, str] | None = None
        for card_no, serial in cards:
            rows = _rows(connection, "SELECT seq, debit_account_id FROM transfers WHERE "
                         "credit_account_id = ? AND code = ? AND result = 0 AND posted_at_us < ? "
                         "ORDER BY seq DESC LIMIT 1", f"epload:{serial}", load, end)
            if rows and (best is None or rows[0][0] > best[0]):
                best = (int(rows[0][0]), rows[0][1].partition(":")[2], card_no)
        name = names[0][0] if names else ""
        if best is None:
            targets[holder] = RefundTarget(holder, name, None, None)
        else:
            targets[holder] = RefundTarget(holder, name, best[1], best[2])
    return targets


def _late_uploads(connection: Connection, start: int, end: int,
                  cutover: Cutover) -> tuple[int, int]:
    opened = dt.datetime.fromtimestamp(start / 1_000_000, cutover.zone).strftime("%Y%m%d%H%M%S")
    rows = _rows(connection, "SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM offline_records "
                 "WHERE received_at_us >= ? AND received_at_us < ? AND card_datetime < ? "
                 "AND transfer_id IS NOT NULL", start, end, opened)
    return int(rows[0][0]), int(rows[0][1])

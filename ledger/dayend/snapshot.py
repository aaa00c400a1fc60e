"""What day-end reads for a business date, in one read transaction (a consistent snapshot while
the switch keeps posting): only transfers posted before the cut-over instant count.

Cold path, on the ledger's SQLite file through SQLAlchemy (SQL set-based: one grouped scan of the
date's transfers, balances at the cut-over as the current balance less what posted after it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine

from ledger.dayend.calendar import Cutover
from ledger.dayend.returned_hold import ReturnedPayout, outstanding
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
    name: str  # "" as read: names are sealed at rest (`with_names` fills them in)
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
    # payable → its returned payouts not yet re-issued (ledger.dayend.returned_hold)
    returned: dict[str, tuple[ReturnedPayout, ...]] = field(default_factory=dict)


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
        refunds = [
            a.partition(":")[2] for a, v in payables.items() if a.startswith("refund:") and v > 0
        ]
        targets = _refund_targets(connection, refunds, end)
        late = _late_uploads(connection, start, end, cutover)
        returned = outstanding(connection)
    return Snapshot(
        date,
        start,
        end,
        flows,
        payables,
        institutions,
        in_doubt,
        pooled,
        targets,
        late,
        notes,
        returned,
    )


def _rows(connection: Connection, sql: str, *params: Any) -> list[Any]:
    return list(connection.exec_driver_sql(sql, params if params else ()).fetchall())


def _flows(connection: Connection, start: int, end: int) -> Iterator[Flow]:
    dialect = connection.dialect.name
    debit, credit = _grouped("debit_account_id", dialect), _grouped("credit_account_id", dialect)
    sql = (
        f"SELECT code, {debit} AS d, {credit} AS c, COUNT(*), SUM(amount_fen) FROM transfers "
        "WHERE result = 0 AND posted_at_us >= ? AND posted_at_us < ? AND code <> ? "
        "GROUP BY code, d, c ORDER BY code, d, c"
    )
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
            f"SELECT id, debits_posted, credits_posted FROM accounts WHERE kind IN ({kinds})",
        )
    }
    likes = " OR ".join(f"{{side}} LIKE '{k}:%'" for k in PAYABLE_KINDS)
    for side, sign in (("debit_account_id", 1), ("credit_account_id", -1)):
        sql = (
            f"SELECT {side}, SUM(amount_fen) FROM transfers WHERE result = 0 "
            f"AND posted_at_us >= ? AND ({likes.format(side=side)}) GROUP BY {side}"
        )
        for account, amount in _rows(connection, sql, end):
            balances[account] = balances.get(account, 0) + sign * int(amount)
    # A payout belongs to its business date, whenever its approval posted it: an earlier
    # date's posted after the cut-over is still owed no more; this date's (or a later one's)
    # posted before it (a clock set back, a drill) is still to be paid by this date.
    sql = (
        "SELECT t.debit_account_id, SUM(t.amount_fen), p.business_date < ?, "
        "t.posted_at_us < ? FROM payouts p JOIN transfers t ON t.id = p.transfer_id "
        "WHERE t.result = 0 GROUP BY 1, 3, 4"
    )  # by position: PostgreSQL too
    for account, amount, earlier, before in _rows(connection, sql, date, end):
        if bool(earlier) != bool(before):
            sign = -1 if earlier else 1
            balances[account] = balances.get(account, 0) + sign * int(amount)
    return balances


def _institutions(connection: Connection) -> dict[str, Institution]:
    sql = (
        "SELECT id, kind, name, settlement_bank_id, settlement_account_no FROM institutions "
        "ORDER BY id"
    )
    return {row[0]: Institution(*row) for row in _rows(connection, sql)}


def _in_doubt(connection: Connection, end: int) -> Iterator[InDoubt]:
    kinds = ", ".join(f"'{k}'" for k in IN_DOUBT_KINDS)
    current = {
        account: int(credits) - int(debits)
        for account, debits, credits in _rows(
            connection,
            f"SELECT id, debits_posted, credits_posted FROM accounts WHERE kind IN ({kinds}) "
            "AND debits_posted <> credits_posted",
        )
    }
    # Accounts balanced now may not have been at the cut-over: add those moved after it.
    likes = " OR ".join(
        f"credit_account_id LIKE '{k}:%' OR debit_account_id LIKE '{k}:%'" for k in IN_DOUBT_KINDS
    )
    later = _rows(
        connection,
        "SELECT debit_account_id, credit_account_id, amount_fen FROM "
        f"transfers WHERE result = 0 AND posted_at_us >= ? AND ({likes})",
        end,
    )
    for debit, credit, amount in later:
        current[credit] = current.get(credit, 0) - int(amount)
        current[debit] = current.get(debit, 0) + int(amount)
    open_accounts = sorted(a for a, v in current.items() if v and a.split(":")[0] in IN_DOUBT_KINDS)
    moves: dict[str, list[tuple[int, int]]] = defaultdict(list)  # account → (signed fen, time)
    for chunk in _chunks(open_accounts):
        marks = ", ".join("?" * len(chunk))
        sql = (
            "SELECT debit_account_id, credit_account_id, amount_fen, posted_at_us FROM "
            f"transfers WHERE (debit_account_id IN ({marks}) OR credit_account_id IN "
            f"({marks})) AND result = 0 AND posted_at_us < ? ORDER BY seq"
        )
        wanted = set(chunk)
        for debit, credit, amount, posted in _rows(connection, sql, *chunk, *chunk, end):
            if debit in wanted:
                moves[debit].append((-int(amount), int(posted)))
            if credit in wanted:
                moves[credit].append((int(amount), int(posted)))
    for account in open_accounts:
        running, since = 0, 0
        for amount, posted in moves[account]:
            if running == 0 and amount:
                since = posted
            running += amount
        if running:
            yield InDoubt(account, running, since)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for at in range(0, len(items), CHUNK):
        yield items[at : at + CHUNK]


def _pooled(
    connection: Connection, start: int, end: int
) -> tuple[tuple[PooledPart, ...], tuple[str, ...]]:
    """The date's pooled-fund shares (bills completed, less voids) by institution, category and
    class, from each bill's split (its pooled share is the sum of its lines' pooled parts); what
    the splits do not explain is shown unattributed ("-") with a note."""
    codes = (int(TransferCode.BILL_POOLED_SHARE), int(TransferCode.VOID_POOLED))
    posted: dict[str, int] = defaultdict(int)  # institution → pooled fen posted (voids less)
    sql = (
        "SELECT code, debit_account_id, credit_account_id, SUM(amount_fen) FROM transfers "
        "WHERE result = 0 AND posted_at_us >= ? AND posted_at_us < ? AND code IN (?, ?) "
        "GROUP BY code, debit_account_id, credit_account_id"
    )
    for code, debit, credit, amount in _rows(connection, sql, start, end, *codes):
        sign = 1 if code == codes[0] else -1
        posted[(credit if sign > 0 else debit).partition(":")[2]] += sign * int(amount)
    if connection.dialect.name == "sqlite":
        parts = _parts_sqlite(connection, start, end, codes)
    else:
        parts = _parts_python(connection, start, end, codes)
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    explained: dict[str, int] = defaultdict(int)
    for institution, category, coverage, amount, bills in parts:
        totals[(institution, category, coverage)] = [amount, bills]
        explained[institution] += amount
    notes = []
    for institution, amount in sorted(posted.items()):
        if amount != explained[institution]:
            gap = amount - explained[institution]
            _add(totals[(institution, "-", "-")], gap)
            notes.append(f"{institution}: {gap} fen of pooled shares not explained by bill splits")
    pooled = tuple(
        PooledPart(i, c, k, v[0], v[1]) for (i, c, k), v in sorted(totals.items()) if v[0] or v[1]
    )
    return pooled, tuple(notes)


Part = tuple[str, str, str, int, int]  # institution, category, coverage, fen, bills


def _parts_sqlite(
    connection: Connection, start: int, end: int, codes: tuple[int, int]
) -> list[Part]:
    """Set-based in SQLite's JSON functions: one pass over the date's pooled-share transfers
    joined with their bills' split lines."""
    sql = (
        "SELECT CASE WHEN t.code = ? THEN substr(t.credit_account_id, 8) "
        "ELSE substr(t.debit_account_id, 8) END AS inst, "
        "coalesce(json_extract(b.split_json, '$.special_category'), "
        "json_extract(b.split_json, '$.category')) AS category, "
        "coalesce(json_extract(l.value, '$.coverage'), '-') AS coverage, "
        "SUM(CASE WHEN t.code = ? THEN 1 ELSE -1 END * json_extract(p.value, '$.amount_fen')), "
        "COUNT(DISTINCT t.id) "
        "FROM transfers t JOIN medical_bills b ON b.bill_id = substr(t.reference, 6), "
        "json_each(b.split_json, '$.lines') l, json_each(l.value, '$.parts') p "
        "WHERE t.result = 0 AND t.posted_at_us >= ? AND t.posted_at_us < ? AND t.code IN (?, ?) "
        "AND json_extract(p.value, '$.share') = 'pooled' "
        "GROUP BY inst, category, coverage"
    )
    rows = _rows(connection, sql, codes[0], codes[0], start, end, *codes)
    return [(str(i), str(c), str(k), int(a), int(n)) for i, c, k, a, n in rows]


def _parts_python(
    connection: Connection, start: int, end: int, codes: tuple[int, int]
) -> list[Part]:
    moves = _rows(
        connection,
        "SELECT code, reference, debit_account_id, credit_account_id "
        "FROM transfers WHERE result = 0 AND posted_at_us >= ? AND "
        "posted_at_us < ? AND code IN (?, ?)",
        start,
        end,
        *codes,
    )
    bill_ids = sorted({ref.partition("|")[2] for _, ref, _, _ in moves})
    splits: dict[str, str] = {}
    for chunk in _chunks(bill_ids):
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT bill_id, split_json FROM medical_bills WHERE bill_id IN ({marks})"
        splits.update((row[0], row[1]) for row in _rows(connection, sql, *chunk))
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for code, ref, debit, credit in moves:
        sign = 1 if code == codes[0] else -1
        institution = (credit if sign > 0 else debit).partition(":")[2]
        text = splits.get(ref.partition("|")[2])
        for (category, coverage), part in sorted(_split_parts(text).items() if text else ()):
            _add(totals[(institution, category, coverage)], sign * part)
    return [(i, c, k, v[0], v[1]) for (i, c, k), v in sorted(totals.items())]


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
    return dict(parts)


def with_names(snapshot: Snapshot, names: dict[str, str]) -> Snapshot:
    """`snapshot` with its refund targets' names (opened through the HSM: ledger.personal)."""
    targets = {
        holder: dataclasses.replace(target, name=names.get(holder, ""))
        for holder, target in snapshot.refund_targets.items()
    }
    return dataclasses.replace(snapshot, refund_targets=targets)


def _refund_targets(
    connection: Connection, cardholders: Iterable[str], end: int
) -> dict[str, RefundTarget]:
    targets = {}
    load = int(TransferCode.LOAD_INTO_DOUBT)
    for holder in sorted(cardholders):
        cards = _rows(
            connection,
            "SELECT card_no, application_serial FROM cards WHERE "
            "cardholder_id = ? ORDER BY card_no",
            holder,
        )
        best: tuple[int, str, str] | None = None
        for card_no, serial in cards:
            rows = _rows(
                connection,
                "SELECT seq, debit_account_id FROM transfers WHERE "
                "credit_account_id = ? AND code = ? AND result = 0 AND posted_at_us < ? "
                "ORDER BY seq DESC LIMIT 1",
                f"epload:{serial}",
                load,
                end,
            )
            if rows and (best is None or rows[0][0] > best[0]):
                best = (int(rows[0][0]), rows[0][1].partition(":")[2], card_no)
        name = ""  # sealed at rest: the run opens it through the HSM (`with_names`)
        if best is None:
            targets[holder] = RefundTarget(holder, name, None, None)
        else:
            targets[holder] = RefundTarget(holder, name, best[1], best[2])
    return targets


def _late_uploads(
    connection: Connection, start: int, end: int, cutover: Cutover
) -> tuple[int, int]:
    opened = dt.datetime.fromtimestamp(start / 1_000_000, cutover.zone).strftime("%Y%m%d%H%M%S")
    rows = _rows(
        connection,
        "SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) FROM offline_records "
        "WHERE received_at_us >= ? AND received_at_us < ? AND card_datetime < ? "
        "AND transfer_id IS NOT NULL",
        start,
        end,
        opened,
    )
    return int(rows[0][0]), int(rows[0][1])

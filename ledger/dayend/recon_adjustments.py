"""Review adjustments under maker-checker (ledger/dayend/review_queue.py): a correcting transfer
between two existing accounts whose kinds form one of :data:`ledger.kinds.ALLOWED_PAIRS` (so it
never crosses between insurance money and the cardholders' own money), proposed by one operator
as a pending ``approvals`` row (subject_kind ``review_adjustment``) and posted only when a
different operator approves it. Its transfer id comes from the approval id, so approving twice
posts once; a refusal by the ledger is remembered under that id, so a refused adjustment is
declined (the item open again) and must be proposed anew. Every step is in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from ledger import schema
from ledger.core import Ledger, Transfer, TransferResult, transfer_id
from ledger.dayend.review_queue import (
    ReviewError,
    ReviewQueue,
    Status,
    audit,
    check_note,
    check_operator,
    check_transition,
    set_status,
)
from ledger.kinds import ALLOWED_PAIRS, kind_of
from ledger.medical.sql_store import write_transaction

ADJUSTMENT_KIND = "review_adjustment"
ADJUSTMENT_CODE = 901  # the transfer code of an approved review adjustment
_A = schema.approvals.c


@dataclass(frozen=True)
class Adjustment:
    """A proposed correcting transfer: debit → credit, `amount_fen`, with the maker's note."""

    debit_account: str
    credit_account: str
    amount_fen: int
    note: str = ""


@dataclass(frozen=True)
class PendingAdjustment:
    approval_id: int
    review_key: str
    adjustment: Adjustment
    made_by: str
    made_at_us: int
    status: str
    approved_by: str | None
    reason: str

    @property
    def transfer_id(self) -> str:
        return adjustment_transfer_id(self.approval_id)


def adjustment_transfer_id(approval_id: int) -> str:
    return transfer_id("review-adjustment", approval_id)


def pending_adjustments(
    queue: ReviewQueue, key: str | None = None, status: str | None = None
) -> list[PendingAdjustment]:
    """The adjustments proposed (for an item), oldest first."""
    statement = (
        select(
            _A.id,
            _A.subject_id,
            _A.payload,
            _A.made_by,
            _A.made_at_us,
            _A.status,
            _A.approved_by,
            _A.reason,
        )
        .where(_A.subject_kind == ADJUSTMENT_KIND)
        .order_by(_A.id)
    )
    if key is not None:
        statement = statement.where(_A.subject_id == key)
    if status is not None:
        statement = statement.where(_A.status == status)
    with queue.engine.connect() as connection:
        return [_pending(tuple(row)) for row in connection.execute(statement)]


def propose(
    queue: ReviewQueue, ref: str, adjustment: Adjustment, operator: str, now_us: int
) -> PendingAdjustment:
    """The maker's side: check the transfer and record it for a second operator."""
    check_operator(operator)
    check_note(adjustment.note)
    with write_transaction(queue.engine) as connection:
        item = queue.find(ref, connection)
        check_transition("adjust", item.status)
        _check_adjustment(connection, adjustment)
        payload = json.dumps(
            {
                "debit": adjustment.debit_account,
                "credit": adjustment.credit_account,
                "amount_fen": adjustment.amount_fen,
                "note": adjustment.note,
            },
            ensure_ascii=False,
            sort_keys=True,
        )
        approval_id = connection.execute(
            insert(schema.approvals)
            .values(
                subject_kind=ADJUSTMENT_KIND,
                subject_id=item.key,
                payload=payload,
                made_by=operator,
                made_at_us=now_us,
                status="pending",
            )
            .returning(_A.id)
        ).scalar_one()
        set_status(connection, item, Status.ADJUSTING, None, None)
        audit(
            connection,
            now_us,
            operator,
            "review.adjust",
            item.key,
            approval=approval_id,
            debit=adjustment.debit_account,
            credit=adjustment.credit_account,
            amount_fen=adjustment.amount_fen,
            note=adjustment.note,
        )
    return get(queue, int(approval_id))


def get(queue: ReviewQueue, approval_id: int) -> PendingAdjustment:
    """One adjustment by its approval id."""
    found = [p for p in pending_adjustments(queue) if p.approval_id == approval_id]
    if not found:
        raise ReviewError(f"no review adjustment {approval_id}")
    return found[0]


async def approve(
    queue: ReviewQueue, ledger: Ledger, approval_id: int, operator: str, now_us: int
) -> TransferResult:
    """The checker's side: a different operator posts the transfer. A replay after a crash
    posts nothing and completes the bookkeeping; a ledger refusal declines it."""
    check_operator(operator)
    pending = get(queue, approval_id)
    if pending.status != "pending":
        raise ReviewError(f"adjustment {approval_id} is {pending.status}, not pending")
    if pending.made_by == operator:
        with write_transaction(queue.engine) as connection:
            audit(
                connection,
                now_us,
                operator,
                "review.approve-refused",
                pending.review_key,
                approval=approval_id,
                why="same operator as the maker",
            )
        raise ReviewError(
            f"adjustment {approval_id} was proposed by {operator}: "
            "a second, different operator must approve it"
        )
    adj = pending.adjustment
    transfer = Transfer(
        pending.transfer_id,
        adj.debit_account,
        adj.credit_account,
        adj.amount_fen,
        ADJUSTMENT_CODE,
        f"review-adjustment|{approval_id}|{pending.review_key}",
    )
    (result,) = await ledger.post([transfer])
    if not result.ok:
        _decline(queue, pending, operator, f"the ledger refused it: {result.name}", now_us)
        raise ReviewError(
            f"the ledger refused adjustment {approval_id}: {result.name}; "
            "it is declined and the item open again"
        )
    with write_transaction(queue.engine) as connection:
        claimed = connection.execute(
            update(schema.approvals)
            .where(_A.id == approval_id, _A.status == "pending")
            .values(status="approved", approved_by=operator, approved_at_us=now_us)
        ).rowcount
        if claimed != 1:
            raise ReviewError(f"adjustment {approval_id} was decided meanwhile")
        item = queue.find(pending.review_key, connection)
        check_transition("approve-adjustment", item.status)
        set_status(connection, item, Status.ADJUSTED, operator, now_us)
        audit(
            connection,
            now_us,
            operator,
            "review.approve-adjustment",
            item.key,
            approval=approval_id,
            transfer=transfer.id,
            result=result.name,
        )
    return result


def decline(queue: ReviewQueue, approval_id: int, operator: str, note: str, now_us: int) -> None:
    """The checker (or the maker, withdrawing it) declines: the item is open again."""
    check_operator(operator)
    check_note(note)
    pending = get(queue, approval_id)
    if pending.status != "pending":
        raise ReviewError(f"adjustment {approval_id} is {pending.status}, not pending")
    _decline(queue, pending, operator, note, now_us)


def _decline(
    queue: ReviewQueue, pending: PendingAdjustment, operator: str, why: str, now_us: int
) -> None:
    with write_transaction(queue.engine) as connection:
        connection.execute(
            update(schema.approvals)
            .where(_A.id == pending.approval_id, _A.status == "pending")
            .values(status="rejected", approved_by=operator, approved_at_us=now_us, reason=why)
        )
        item = queue.find(pending.review_key, connection)
        if Status(item.status) is Status.ADJUSTING:
            set_status(connection, item, Status.OPEN, None, None)
        audit(
            connection,
            now_us,
            operator,
            "review.decline-adjustment",
            item.key,
            approval=pending.approval_id,
            note=why,
        )


def _check_adjustment(connection: Connection, adjustment: Adjustment) -> None:
    a = adjustment
    if not 0 < a.amount_fen <= 10**15:
        raise ReviewError("an adjustment moves a positive amount")
    if a.debit_account == a.credit_account:
        raise ReviewError("an adjustment moves money between two different accounts")
    c = schema.accounts.c
    found = connection.execute(
        select(c.id, c.closed).where(c.id.in_([a.debit_account, a.credit_account]))
    ).fetchall()
    known = {row.id: bool(row.closed) for row in found}
    for account in (a.debit_account, a.credit_account):
        if account not in known:
            raise ReviewError(f"no account {account}")
        if known[account]:
            raise ReviewError(f"account {account} is closed")
    pair = (kind_of(a.debit_account), kind_of(a.credit_account))
    if pair not in ALLOWED_PAIRS:
        raise ReviewError(
            f"{pair[0].name} → {pair[1].name} is not an allowed transfer"
            " (ledger.kinds.ALLOWED_PAIRS)"
        )


def _pending(row: Sequence[Any]) -> PendingAdjustment:
    approval_id, key, payload, made_by, made_at, status, approved_by, reason = row
    data = json.loads(str(payload))
    adjustment = Adjustment(data["debit"], data["credit"], int(data["amount_fen"]), data["note"])
    return PendingAdjustment(
        int(approval_id),
        str(key),
        adjustment,
        str(made_by),
        int(made_at),
        str(status),
        None if approved_by is None else str(approved_by),
        str(reason),
    )

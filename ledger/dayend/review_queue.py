"""The review queue: every exception held for a person (a bad TAC, a counter gap, a shadow
difference, an unmatched fee record or bank item, a payout returned, a load in doubt too long)
is a ``review_items`` row with a reason; operators accept, reject or adjust it, and every action
goes to the append-only ``audit_log`` with who and when (DESIGN §3.6, §5).

Statuses and the only transitions allowed (anything else is refused with :class:`ReviewError`):

============  ===================  ==========  ==================================================
from          action               to          what it means
============  ===================  ==========  ==================================================
open          accept               accepted    the item stands as posted; nothing to move
open          reject               rejected    the item is judged wrong (e.g. a forgery): closed
open          adjust               adjusting   a correcting transfer is proposed (the maker)
adjusting     approve-adjustment   adjusted    a second operator approved: the transfer posted
adjusting     decline-adjustment   open        the checker declined, or the ledger refused it
============  ===================  ==========  ==================================================

An adjustment is one documented transfer between two existing accounts whose kinds form one of
:data:`ledger.kinds.ALLOWED_PAIRS` (so it never crosses between insurance money and the
cardholders' own money), recorded as a pending ``approvals`` row (subject_kind
``review_adjustment``); only a different operator may approve it (maker-checker). Its transfer id
comes from the approval id, so approving twice posts once; a refusal by the ledger is remembered
under that id, so a refused adjustment is declined and must be proposed again.

Cold path, SQLite through SQLAlchemy Core (the CLI's database); the adjustment posts through the
ledger's own interface.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from ledger import schema
from ledger.core import Ledger, Transfer, TransferResult, transfer_id
from ledger.kinds import ALLOWED_PAIRS, kind_of
from ledger.medical.sql_store import write_transaction

ADJUSTMENT_KIND = "review_adjustment"
ADJUSTMENT_CODE = 901  # the transfer code of an approved review adjustment
OPERATOR = re.compile(r"[0-9A-Za-z_.@-]{1,40}")
NOTE_CHARS_MAX = 500


class ReviewError(ValueError):
    """An operator's action refused: unknown item, invalid transition, same operator…"""


class Status(enum.Enum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    ADJUSTING = "adjusting"
    ADJUSTED = "adjusted"


#: action → (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "accept": (frozenset({Status.OPEN}), Status.ACCEPTED),
    "reject": (frozenset({Status.OPEN}), Status.REJECTED),
    "adjust": (frozenset({Status.OPEN}), Status.ADJUSTING),
    "approve-adjustment": (frozenset({Status.ADJUSTING}), Status.ADJUSTED),
    "decline-adjustment": (frozenset({Status.ADJUSTING}), Status.OPEN),
}
FINAL = frozenset({Status.ACCEPTED, Status.REJECTED, Status.ADJUSTED})


@dataclass(frozen=True)
class QueuedItem:
    seq: int
    key: str
    reason: str
    reference: str
    amount_fen: int
    detail: str
    status: str
    created_at_us: int
    resolved_at_us: int | None
    resolved_by: str | None


@dataclass(frozen=True)
class AuditEntry:
    at_us: int
    actor: str
    action: str
    subject: str
    detail: str


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


def check_operator(operator: str) -> str:
    if not OPERATOR.fullmatch(operator):
        raise ReviewError(f"an operator is 1–40 letters, digits or _.@-, not {operator!r}")
    return operator


def check_note(note: str) -> str:
    if len(note) > NOTE_CHARS_MAX or not note.isprintable():
        raise ReviewError(f"a note is at most {NOTE_CHARS_MAX} printable characters")
    return note


def check_transition(action: str, current: str) -> Status:
    """The status `action` leads to from `current`, or a clear refusal."""
    sources, target = TRANSITIONS[action]
    if Status(current) not in sources:
        allowed = " or ".join(sorted(s.value for s in sources))
        raise ReviewError(f"the item is {current}: {action} needs it {allowed}")
    return target


def _item(row: Sequence[object]) -> QueuedItem:
    return QueuedItem(*row)  # type: ignore[arg-type]


_R = schema.review_items.c
_ITEM_COLUMNS = (
    _R.seq,
    _R.key,
    _R.reason,
    _R.reference,
    _R.amount_fen,
    _R.detail,
    _R.status,
    _R.created_at_us,
    _R.resolved_at_us,
    _R.resolved_by,
)
_A = schema.approvals.c


def audit(
    connection: Connection, at_us: int, actor: str, action: str, subject: str, **detail: object
) -> None:
    """Append one entry to the audit log (inside the caller's transaction)."""
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    connection.execute(
        insert(schema.audit_log).values(
            at_us=at_us, actor=actor, action=action, subject=subject[:120], detail=text
        )
    )


class ReviewQueue:
    """Operators' actions on the review items of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reading --------------------------------------------------------------------------------
    def items(
        self, status: str | None = None, reason: str | None = None, limit: int = 1000
    ) -> list[QueuedItem]:
        statement = select(*_ITEM_COLUMNS).order_by(_R.seq).limit(limit)
        if status is not None:
            statement = statement.where(_R.status == status)
        if reason is not None:
            statement = statement.where(_R.reason == reason)
        with self.engine.connect() as connection:
            return [_item(tuple(row)) for row in connection.execute(statement)]

    def counts(self) -> dict[tuple[str, str], int]:
        """(status, reason) → number of items."""
        statement = select(_R.status, _R.reason, func.count()).group_by(_R.status, _R.reason)
        with self.engine.connect() as connection:
            return {(s, r): int(n) for s, r, n in connection.execute(statement)}

    def find(self, ref: str, connection: Connection | None = None) -> QueuedItem:
        """An item by its key, a unique prefix of it (6 characters at least) or ``#seq``."""
        if connection is None:
            with self.engine.connect() as fresh:
                return self.find(ref, fresh)
        if ref.startswith("#") and ref[1:].isdigit():
            statement = select(*_ITEM_COLUMNS).where(_R.seq == int(ref[1:]))
        elif len(ref) >= 6 and re.fullmatch(r"[0-9a-f]+", ref):
            statement = select(*_ITEM_COLUMNS).where(_R.key.like(ref + "%")).limit(2)
        else:
            raise ReviewError(f"an item is named by its key (6+ hex digits) or #seq, not {ref!r}")
        found = connection.execute(statement).fetchall()
        if not found:
            raise ReviewError(f"no review item {ref}")
        if len(found) > 1:
            raise ReviewError(f"{ref} names more than one item: give more of the key")
        return _item(tuple(found[0]))

    def trail(self, key: str) -> list[AuditEntry]:
        """The audit entries about an item (and its adjustments), oldest first."""
        a = schema.audit_log.c
        statement = (
            select(a.at_us, a.actor, a.action, a.subject, a.detail)
            .where(a.subject == key)
            .order_by(a.seq)
        )
        with self.engine.connect() as connection:
            return [AuditEntry(*row) for row in connection.execute(statement)]

    def adjustments(
        self, key: str | None = None, status: str | None = None
    ) -> list[PendingAdjustment]:
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
        with self.engine.connect() as connection:
            return [_pending(tuple(row)) for row in connection.execute(statement)]

    # -- acting ---------------------------------------------------------------------------------
    def accept(self, ref: str, operator: str, note: str, now_us: int) -> QueuedItem:
        return self._close(ref, "accept", operator, note, now_us)

    def reject(self, ref: str, operator: str, note: str, now_us: int) -> QueuedItem:
        return self._close(ref, "reject", operator, note, now_us)

    def _close(self, ref: str, action: str, operator: str, note: str, now_us: int) -> QueuedItem:
        check_operator(operator)
        check_note(note)
        with write_transaction(self.engine) as connection:
            item = self.find(ref, connection)
            target = check_transition(action, item.status)
            _set_status(connection, item, target, operator, now_us)
            audit(
                connection,
                now_us,
                operator,
                f"review.{action}",
                item.key,
                note=note,
                status=target.value,
            )
        return self.find(item.key)

    def propose_adjustment(
        self, ref: str, adjustment: Adjustment, operator: str, now_us: int
    ) -> PendingAdjustment:
        """The maker's side: check the transfer and record it for a second operator."""
        check_operator(operator)
        check_note(adjustment.note)
        with write_transaction(self.engine) as connection:
            item = self.find(ref, connection)
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
            _set_status(connection, item, Status.ADJUSTING, None, None)
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
        return self.adjustment(int(approval_id))

    def adjustment(self, approval_id: int) -> PendingAdjustment:
        found = [p for p in self.adjustments() if p.approval_id == approval_id]
        if not found:
            raise ReviewError(f"no review adjustment {approval_id}")
        return found[0]

    async def approve_adjustment(
        self, ledger: Ledger, approval_id: int, operator: str, now_us: int
    ) -> TransferResult:
        """The checker's side: a different operator posts the transfer. A replay after a crash
        posts nothing and completes the bookkeeping; a ledger refusal declines it."""
        check_operator(operator)
        pending = self.adjustment(approval_id)
        if pending.status != "pending":
            raise ReviewError(f"adjustment {approval_id} is {pending.status}, not pending")
        if pending.made_by == operator:
            with write_transaction(self.engine) as connection:
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
            self._decline(pending, operator, f"the ledger refused it: {result.name}", now_us)
            raise ReviewError(
                f"the ledger refused adjustment {approval_id}: {result.name}; "
                "it is declined and the item open again"
            )
        with write_transaction(self.engine) as connection:
            claimed = connection.execute(
                update(schema.approvals)
                .where(_A.id == approval_id, _A.status == "pending")
                .values(status="approved", approved_by=operator, approved_at_us=now_us)
            ).rowcount
            if claimed != 1:
                raise ReviewError(f"adjustment {approval_id} was decided meanwhile")
            item = self.find(pending.review_key, connection)
            check_transition("approve-adjustment", item.status)
            _set_status(connection, item, Status.ADJUSTED, operator, now_us)
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

    def decline_adjustment(self, approval_id: int, operator: str, note: str, now_us: int) -> None:
        """The checker (or the maker, withdrawing it) declines: the item is open again."""
        check_operator(operator)
        check_note(note)
        pending = self.adjustment(approval_id)
        if pending.status != "pending":
            raise ReviewError(f"adjustment {approval_id} is {pending.status}, not pending")
        self._decline(pending, operator, note, now_us)

    def _decline(self, pending: PendingAdjustment, operator: str, why: str, now_us: int) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(
                update(schema.approvals)
                .where(_A.id == pending.approval_id, _A.status == "pending")
                .values(status="rejected", approved_by=operator, approved_at_us=now_us, reason=why)
            )
            item = self.find(pending.review_key, connection)
            if Status(item.status) is Status.ADJUSTING:
                _set_status(connection, item, Status.OPEN, None, None)
            audit(
                connection,
                now_us,
                operator,
                "review.decline-adjustment",
                item.key,
                approval=pending.approval_id,
                note=why,
            )


def _set_status(
    connection: Connection,
    item: QueuedItem,
    target: Status,
    operator: str | None,
    now_us: int | None,
) -> None:
    final = target in FINAL
    changed = connection.execute(
        update(schema.review_items)
        .where(_R.key == item.key, _R.status == item.status)
        .values(
            status=target.value,
            resolved_by=operator if final else None,
            resolved_at_us=now_us if final else None,
        )
    ).rowcount
    if changed != 1:
        raise ReviewError(f"review item {item.key} changed meanwhile: try again")


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

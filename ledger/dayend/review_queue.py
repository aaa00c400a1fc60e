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

An adjustment is a documented transfer of an allowed pair, approved by a second operator
(maker-checker): `ledger.dayend.recon_adjustments`. Cold path, SQLite through SQLAlchemy Core
(the CLI's database).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, insert, select, update

from ledger import schema
from ledger.medical.sql_store import write_transaction

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


def audit_refusal(
    engine: Engine, at_us: int, actor: str, action: str, subject: str, why: str
) -> None:
    """A refused import in the audit log (its own transaction: nothing else was written)."""
    with write_transaction(engine) as connection:
        audit(connection, at_us, actor, action, subject or "(unnamed file)", refused=why[:500])


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
        """An item by its key, a unique prefix of it (6 characters at least), ``#seq`` or the
        number ``seq`` as `review list` shows it (a number of 6+ digits that is no item's seq
        is read as a key prefix)."""
        if connection is None:
            with self.engine.connect() as fresh:
                return self.find(ref, fresh)
        number = ref.removeprefix("#")
        if number.isdigit() and (ref.startswith("#") or len(ref) < 6):
            statement = select(*_ITEM_COLUMNS).where(_R.seq == int(number))
        elif ref.isdigit() and self._seq_exists(int(ref), connection):
            statement = select(*_ITEM_COLUMNS).where(_R.seq == int(ref))
        elif len(ref) >= 6 and re.fullmatch(r"[0-9a-f]+", ref):
            statement = select(*_ITEM_COLUMNS).where(_R.key.like(ref + "%")).limit(2)
        else:
            raise ReviewError(
                f"an item is named by its number (as listed), #number or key (6+ hex digits),"
                f" not {ref!r}"
            )
        found = connection.execute(statement).fetchall()
        if not found:
            raise ReviewError(f"no review item {ref}")
        if len(found) > 1:
            raise ReviewError(f"{ref} names more than one item: give more of the key")
        return _item(tuple(found[0]))

    @staticmethod
    def _seq_exists(seq: int, connection: Connection) -> bool:
        found = connection.execute(select(_R.seq).where(_R.seq == seq)).first()
        return found is not None

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
            set_status(connection, item, target, operator, now_us)
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


def set_status(
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

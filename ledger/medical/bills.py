"""Bills from the hospitals' charging systems and their life cycle; the store port (bills and the
accumulators together, so a split and its reservation happen atomically) and its in-memory
implementation. The SQL implementation is `ledger.medical.sql_store`.

States and what each transition does to the person's accumulators:

    open ──approve──▶ approved ──complete──▶ completed ──void──▶ voided   (commit / reverse)
      │                  │  └───void──▶ voided                            (release)
      ├──cancel (HIS)──▶ cancelled                                        (release)
      ├──reverse (POS)─▶ reversed  ◀──reverse── approved                  (release)
      └──expire───────▶ expired    ◀──expire─── approved                  (release)

A bill is `open` from its submission: its split is computed and its accumulator delta reserved at
once. A transition to the state a bill is already in changes nothing (a repeated message); any
other transition from a state not listed is refused (BillStateError).

>>> TRANSITIONS[BillState.COMPLETED]
(frozenset({<BillState.APPROVED: 'approved'>}), 'commit')
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from ledger.medical.accumulators import AccumulatorBook, Totals
from ledger.medical.codec import bill_to_dict
from ledger.medical.split import Bill, Split

if TYPE_CHECKING:
    from ledger.pg_calls import LedgerCall

EXPIRE_BATCH_MAX = 1000


class BillState(enum.Enum):
    OPEN = "open"
    APPROVED = "approved"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REVERSED = "reversed"
    EXPIRED = "expired"
    VOIDED = "voided"


S = BillState
IN_FLIGHT = frozenset({S.OPEN, S.APPROVED})
Effect = Literal["none", "commit", "release", "void"]

#: target → (states it may be reached from, what it does to the accumulators)
TRANSITIONS: dict[BillState, tuple[frozenset[BillState], Effect]] = {
    S.APPROVED: (frozenset({S.OPEN}), "none"),
    S.COMPLETED: (frozenset({S.APPROVED}), "commit"),
    S.CANCELLED: (frozenset({S.OPEN}), "release"),
    S.REVERSED: (IN_FLIGHT, "release"),
    S.EXPIRED: (IN_FLIGHT, "release"),
    S.VOIDED: (frozenset({S.APPROVED, S.COMPLETED}), "void"),
}


class Held(NamedTuple):
    """An institution's open bills for one person's year (`MedicalStore.held`)."""

    bills: int
    total_fen: int


class DayTotal(NamedTuple):
    """An institution's bills of one service date in one state, added up (`dated_totals`)."""

    state: BillState
    bills: int
    total_fen: int
    personal_account_fen: int
    pooled_fen: int
    self_pay_fen: int


class BillStateError(ValueError):
    def __init__(self, bill_id: str, state: BillState, target: BillState) -> None:
        super().__init__(f"bill {bill_id} is {state.value}: it cannot become {target.value}")
        self.bill_id, self.state, self.target = bill_id, state, target

    def __reduce__(self) -> tuple[type[BillStateError], tuple[str, BillState, BillState]]:
        """Pickled as it was made (it comes back from the ledger's writer process)."""
        return type(self), (self.bill_id, self.state, self.target)


class DuplicateBillError(ValueError):
    """The institution's bill number was already used for a different bill."""


@dataclass(frozen=True)
class Submission:
    """An itemised bill as a charging system sends it."""

    his_bill_no: str  # the institution's own reference: the idempotency key with the institution
    card_no: str
    service_date: dt.date
    bill: Bill

    def digest(self) -> str:
        canonical = {
            "his_bill_no": self.his_bill_no,
            "card_no": self.card_no,
            "service_date": self.service_date.isoformat(),
            "bill": bill_to_dict(self.bill),
        }
        text = json.dumps(canonical, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def bill_id_for(institution_id: str, his_bill_no: str) -> str:
    """16 hex digits derived from the institution and its bill number (the POS's reference).

    >>> bill_id_for("H001", "2026-000123")
    '9054CA9CBE34A38E'
    """
    text = f"{institution_id}\x1f{his_bill_no}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest().upper()


@dataclass(frozen=True)
class BillRecord:
    bill_id: str
    institution_id: str
    his_bill_no: str
    card_no: str
    person_id: str
    year: int
    service_date: dt.date
    request_digest: str
    bill: Bill
    split: Split
    state: BillState
    created_at_us: int
    expires_at_us: int
    updated_at_us: int

    def __reduce__(self) -> tuple[Callable[..., BillRecord], tuple[object, ...]]:
        """Its values, the day by ordinal and the state by value, rebuilt in one call: the
        writer process answers each approval with a record, which pickle's default (a dict of
        names, the date and enum each reduced) took twice as long both ways to send."""
        day = self.service_date
        return _bill_record, (
            self.bill_id, self.institution_id, self.his_bill_no, self.card_no, self.person_id,
            self.year, day.toordinal() if type(day) is dt.date else day, self.request_digest,
            self.bill, self.split, self.state._value_, self.created_at_us, self.expires_at_us,
            self.updated_at_us,
        )  # fmt: skip


_STATES = {state._value_: state for state in BillState}
_new = object.__new__
_from_ordinal = dt.date.fromordinal
#: a record's ``__dict__`` set whole, in C (its frozen ``__setattr__`` refuses it)
_set_dict = BillRecord.__dict__["__dict__"].__set__


def _bill_record(
    bill_id: str, institution_id: str, his_bill_no: str, card_no: str, person_id: str,
    year: int, day: int | dt.date, request_digest: str, bill: Bill, split: Split, state: str,
    created_at_us: int, expires_at_us: int, updated_at_us: int,
) -> BillRecord:  # fmt: skip
    """A `BillRecord` as `BillRecord.__reduce__` gave it, its fields set without its frozen
    ``__init__``."""
    record: BillRecord = _new(BillRecord)
    _set_dict(record, {  # a dict display, not keywords to update(): no dict copied
        "bill_id": bill_id, "institution_id": institution_id, "his_bill_no": his_bill_no,
        "card_no": card_no, "person_id": person_id, "year": year,
        "service_date": _from_ordinal(day) if type(day) is int else day,
        "request_digest": request_digest, "bill": bill, "split": split, "state": _STATES[state],
        "created_at_us": created_at_us, "expires_at_us": expires_at_us,
        "updated_at_us": updated_at_us,
    })  # fmt: skip
    return record


def check_transition(record: BillRecord, target: BillState) -> Effect | None:
    """The accumulator effect of moving `record` to `target`; None when it already is there."""
    if record.state is target:
        return None
    sources, effect = TRANSITIONS[target]
    if record.state not in sources:
        raise BillStateError(record.bill_id, record.state, target)
    if effect == "void" and record.state is S.APPROVED:
        return "release"
    return effect


class MedicalStore(Protocol):
    """Bills and accumulators. Every method is atomic; implementations serialise the
    read-split-reserve of `submit` per person (memory: a lock; SQL: a write transaction)."""

    def submit(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        """Store `record` with the split `compute` returns for the person's current view
        (committed + reserved), reserving its delta. Returns (stored record, created); an
        existing bill id returns the stored record (created False) when its request digest is
        the same, else raises DuplicateBillError."""
        ...

    def get(self, bill_id: str) -> BillRecord | None: ...

    def transition(
        self,
        bill_id: str,
        target: BillState,
        now_us: int,
        check: Callable[[BillRecord], BillState] | None = None,
    ) -> tuple[BillRecord, bool]:
        """Move a bill (KeyError when unknown); (record, changed). With `check`, the target is
        what `check` returns for the bill as it is, called atomically with the move (it may
        raise, and then nothing changes)."""
        ...

    async def transition_async(
        self,
        bill_id: str,
        target: BillState,
        now_us: int,
        check: Callable[[BillRecord], BillState] | None = None,
    ) -> tuple[BillRecord, bool]:
        """`transition` for a caller on the event loop (the daemon's handlers)."""
        ...

    def expirable(self, now_us: int, limit: int) -> list[str]:
        """Ids of in-flight bills whose expiry is before `now_us`."""
        ...

    def bills_of(
        self, institution_id: str, after_no: str, since_us: int, limit: int
    ) -> list[BillRecord]:
        """Up to `limit` of the institution's bills submitted at or after `since_us`, in the
        order of their bill numbers (code-point order), those after `after_no` ("" from the
        first): the HIS's listing, page by page."""
        ...

    def bills_dated(
        self, institution_id: str, service_date: dt.date, after_no: str, limit: int
    ) -> list[BillRecord]:
        """Up to `limit` of the institution's bills of `service_date`, by bill number, those
        after `after_no`: the reconciliation listing, page by page."""
        ...

    def dated_totals(self, institution_id: str, service_date: dt.date) -> list[DayTotal]:
        """The institution's bills of `service_date` added up per state (states without bills
        left out), in the order of the states' names."""
        ...

    def held(self, institution_id: str, person_id: str, year: int, now_us: int) -> Held:
        """`institution_id`'s open bills for the person's year that have not expired at
        `now_us`: what it holds of the person without the card."""
        ...

    def post_offline(
        self, key: str, person_id: str, year: int, compute: Callable[[Totals], Totals]
    ) -> bool:
        """Commit an offline purchase's delta (computed from the current view) once per key."""
        ...

    def accumulators(self, person_id: str, year: int) -> tuple[Totals, Totals]:
        """(committed, view = committed + reserved)."""
        ...

    @property
    def posts_with_ledger(self) -> bool:
        """Whether its writes run in the ledger's transactions (`transition_write`)."""
        ...

    def transition_write(
        self,
        bill_id: str,
        target: BillState,
        now_us: int,
        check: Callable[[BillRecord], BillState] | None,
    ) -> Callable[[sqlite3.Connection], tuple[BillRecord, bool]] | LedgerCall | None:
        """`transition` as a write for the ledger's writer to run in one of its transactions
        (`ledger.writer.jobs.PostThenCall` on SQLite, a `ledger.pg_calls.LedgerCall` on
        PostgreSQL); None when this store does not write there."""
        ...


class MemoryMedicalStore:
    """The in-memory store: an AccumulatorBook and a dict of bills under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._book = AccumulatorBook()
        self._bills: dict[str, BillRecord] = {}

    def submit(
        self, record: BillRecord, compute: Callable[[Totals], Split]
    ) -> tuple[BillRecord, bool]:
        with self._lock:
            known = self._bills.get(record.bill_id)
            if known is not None:
                if known.request_digest != record.request_digest:
                    raise DuplicateBillError(f"bill number {record.his_bill_no} already used")
                return known, False
            split = compute(self._book.view(record.person_id, record.year))
            stored = replace(record, split=split)
            self._book.reserve(record.bill_id, record.person_id, record.year, split.delta)
            self._bills[record.bill_id] = stored
            return stored, True

    def get(self, bill_id: str) -> BillRecord | None:
        with self._lock:
            return self._bills.get(bill_id)

    def transition(
        self,
        bill_id: str,
        target: BillState,
        now_us: int,
        check: Callable[[BillRecord], BillState] | None = None,
    ) -> tuple[BillRecord, bool]:
        with self._lock:
            record = self._bills[bill_id]
            if check is not None:
                target = check(record)
            effect = check_transition(record, target)
            if effect is None:
                return record, False
            if effect == "commit":
                self._book.commit(bill_id)
            elif effect == "release":
                self._book.release(bill_id)
            elif effect == "void":
                self._book.void(bill_id)
            record = replace(record, state=target, updated_at_us=now_us)
            self._bills[bill_id] = record
            return record, True

    async def transition_async(
        self,
        bill_id: str,
        target: BillState,
        now_us: int,
        check: Callable[[BillRecord], BillState] | None = None,
    ) -> tuple[BillRecord, bool]:
        return self.transition(bill_id, target, now_us, check)  # in memory: no waiting

    def expirable(self, now_us: int, limit: int) -> list[str]:
        with self._lock:
            due = [
                r.bill_id
                for r in self._bills.values()
                if r.state in IN_FLIGHT and r.expires_at_us < now_us
            ]
            return sorted(due)[:limit]

    def bills_of(
        self, institution_id: str, after_no: str, since_us: int, limit: int
    ) -> list[BillRecord]:
        with self._lock:
            found = [
                r
                for r in self._bills.values()
                if r.institution_id == institution_id
                and r.his_bill_no > after_no
                and r.created_at_us >= since_us
            ]
        return sorted(found, key=lambda r: r.his_bill_no)[:limit]

    def bills_dated(
        self, institution_id: str, service_date: dt.date, after_no: str, limit: int
    ) -> list[BillRecord]:
        with self._lock:
            found = [
                r
                for r in self._bills.values()
                if (r.institution_id, r.service_date) == (institution_id, service_date)
                and r.his_bill_no > after_no
            ]
        return sorted(found, key=lambda r: r.his_bill_no)[:limit]

    def dated_totals(self, institution_id: str, service_date: dt.date) -> list[DayTotal]:
        with self._lock:
            day = [
                r
                for r in self._bills.values()
                if (r.institution_id, r.service_date) == (institution_id, service_date)
            ]
        totals = []
        for state in sorted({r.state for r in day}, key=lambda s: s.value):
            splits = [r.split for r in day if r.state is state]
            totals.append(
                DayTotal(
                    state,
                    len(splits),
                    sum(x.total_fen for x in splits),
                    sum(x.personal_account_fen for x in splits),
                    sum(x.pooled_fen for x in splits),
                    sum(x.self_pay_fen for x in splits),
                )
            )
        return totals

    def held(self, institution_id: str, person_id: str, year: int, now_us: int) -> Held:
        with self._lock:
            totals = [
                r.split.total_fen
                for r in self._bills.values()
                if (r.institution_id, r.person_id, r.year) == (institution_id, person_id, year)
                and r.state is S.OPEN
                and r.expires_at_us >= now_us
            ]
        return Held(len(totals), sum(totals))

    def post_offline(
        self, key: str, person_id: str, year: int, compute: Callable[[Totals], Totals]
    ) -> bool:
        with self._lock:
            if self._book.entry(key) is not None:
                return False
            delta = compute(self._book.view(person_id, year))
            return self._book.post_offline(key, person_id, year, delta)

    def accumulators(self, person_id: str, year: int) -> tuple[Totals, Totals]:
        with self._lock:
            return self._book.committed(person_id, year), self._book.view(person_id, year)

    @property
    def posts_with_ledger(self) -> bool:
        return False

    def transition_write(
        self,
        bill_id: str,
        target: BillState,
        now_us: int,
        check: Callable[[BillRecord], BillState] | None,
    ) -> Callable[[sqlite3.Connection], tuple[BillRecord, bool]] | None:
        return None

"""The bill service: what the HIS API and the switch's handlers call. It prices and splits a
submitted bill against the reference data and keeps its life cycle and the person's
accumulators in a store (`MemoryMedicalStore` or `SqlMedicalStore`, whose writes are
group-committed). Synchronous; async callers run it in a thread (`asyncio.to_thread`), except
for the daemon's two hot transitions, approval and completion by a card debit, which have async
forms that await the store's writer directly. A transition that depends on the bill (approve,
cancel) is decided inside the store's write, in one round trip (its checks, and MedicalError:
`ledger.medical.refusals`). Times are passed in, never
read.

A submitted bill must pass the plausibility limits of `ledger.medical.limits` (MedicalError
``bill_over_limit``, nothing stored), and holds its reservation by the rule written there: an
open bill for `open_ttl` (its ``expires_at``), a bill the POS approved until `bill_ttl` after its
submission; `expire_bills` releases what is past."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from ledger.medical.accumulators import Totals
from ledger.medical.billable import unbillable
from ledger.medical.bills import (
    EXPIRE_BATCH_MAX,
    BillRecord,
    BillState,
    DuplicateBillError,
    MedicalStore,
    Submission,
    bill_id_for,
)
from ledger.medical.card_copies import VisitCopies
from ledger.medical.catalogue import CatalogueVersion
from ledger.medical.directory import Cardholder, Directory
from ledger.medical.limits import BillLimits, HoldExpiry, check_bill, check_held
from ledger.medical.policy import Policy
from ledger.medical.refusals import (
    MedicalError,
    _Approval,
    _approved,
    _Cancel,
    _CashClose,
    _own,
    _Paid,
)
from ledger.medical.split import ZERO, Person, Split, offline_delta, split_bill

if TYPE_CHECKING:
    from ledger.pg_calls import LedgerCall

BILL_TTL = dt.timedelta(hours=24)  # a bill the POS approved: released this long after submission
OPEN_TTL = dt.timedelta(hours=2)  # an open bill (not yet approved by the POS): its expires_at
#: Threads an async caller should give the service: each write holds its thread until its group
#: commit is durable, so the pool's width caps how many writes one commit can gather. Under
#: bench_settle (20 POS) asyncio's default 6 threads gave 2.8 writes per commit, 32 gave 4.6, and
#: the daemon spent 15-20% less CPU per exchange.
CALLER_THREADS = 32


def micros(now: dt.datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("times are timezone-aware (UTC)")
    return int(now.timestamp() * 1_000_000)


@dataclass(frozen=True)
class Priced:
    """A quote: the split a bill would get now, without reserving anything (price check)."""

    cardholder: Cardholder
    split: Split


def _ttl_us(ttl: dt.timedelta) -> int:
    return int(ttl.total_seconds() * 1_000_000)


class MedicalService:
    def __init__(
        self,
        store: MedicalStore,
        directory: Directory,
        *,
        bill_ttl: dt.timedelta = BILL_TTL,
        open_ttl: dt.timedelta = OPEN_TTL,
        limits: BillLimits | None = None,
        visit_copies: VisitCopies | None = None,
    ) -> None:
        if not dt.timedelta(0) < open_ttl <= bill_ttl:
            raise ValueError("0 < open_ttl <= bill_ttl")
        self.store = store
        self.directory = directory
        self.bill_ttl = bill_ttl
        self.open_ttl = open_ttl
        self.limits = limits or BillLimits()
        # the centre's copies of the visits written to cards (None: none kept, none written)
        self.visit_copies = visit_copies

    # -- from the HIS ---------------------------------------------------------------------------
    def _inputs(
        self, institution_id: str, submission: Submission
    ) -> tuple[Cardholder, Person, int, int]:
        holder = self.directory.cardholder(submission.card_no)
        if holder is None:
            raise MedicalError("unknown_card", "no such card")
        if holder.card_status != "active":
            raise MedicalError("card_not_active", f"the card is {holder.card_status}")
        level = self.directory.institution_level(institution_id)
        if level is None:
            raise MedicalError("unknown_institution", "the institution has no level on record")
        year = submission.service_date.year
        person = Person(holder.category, self.directory.authorised(holder.person_id, year))
        return holder, person, level, year

    def _rules(
        self, institution_id: str, submission: Submission, level: int
    ) -> tuple[CatalogueVersion, Policy]:
        """The catalogue and policy of the service date, once the bill passed the limits and
        every line is one the institution may bill (`ledger.medical.billable`)."""
        day = submission.service_date
        catalogue = self.directory.catalogue_on(day)
        policy = self.directory.policy(day.year)
        if catalogue is None or policy is None:
            raise MedicalError("no_rules", f"no catalogue or policy in force on {day}")
        refused = check_bill(submission.bill, level, catalogue, self.limits)
        if refused is not None:
            raise MedicalError("bill_over_limit", refused)
        kind = self.directory.institution_kind(institution_id)
        found = unbillable(submission.bill, catalogue, policy, kind)
        if found is not None:
            raise MedicalError(found.code, found.message, found.line)
        return catalogue, policy

    def price(self, institution_id: str, submission: Submission) -> Priced:
        """The price check: the split the bill would get now; nothing is stored."""
        submission.bill.validate()
        holder, person, level, year = self._inputs(institution_id, submission)
        catalogue, policy = self._rules(institution_id, submission, level)
        _, view = self.store.accumulators(holder.person_id, year)
        return Priced(holder, split_bill(submission.bill, catalogue, policy, person, level, view))

    def submit_bill(
        self, institution_id: str, submission: Submission, now: dt.datetime
    ) -> tuple[BillRecord, bool]:
        """Price, split and reserve; (record, created). The same submission again returns the
        stored bill (created False) and counts once, whatever happened since to the card, the
        reference data or the limits (a retry must learn what was stored); the same bill number
        with other content is DuplicateBillError."""
        submission.bill.validate()
        known = self.store.get(bill_id_for(institution_id, submission.his_bill_no))
        if known is not None and known.institution_id == institution_id:
            if known.request_digest != submission.digest():  # the number stays its bill's
                raise DuplicateBillError(
                    f"bill number {submission.his_bill_no} already used by bill "
                    f"{known.bill_id} ({known.state.value}) with other content: a new bill "
                    "needs a new number"
                )
            return known, False
        holder, person, level, year = self._inputs(institution_id, submission)
        catalogue, policy = self._rules(institution_id, submission, level)
        now_us = micros(now)
        self._check_held(institution_id, submission, holder.person_id, level, now_us)

        # pure, run inside the store's transaction, and pickled to the ledger's writer process
        # (so with only the bill's items of the catalogue)
        codes = {line.code for line in submission.bill.lines}
        items = {code: item for code, item in catalogue.items.items() if code in codes}
        bill_catalogue = replace(catalogue, items=items)
        split = partial(split_bill, submission.bill, bill_catalogue, policy, person, level)

        draft = BillRecord(
            bill_id=bill_id_for(institution_id, submission.his_bill_no),
            institution_id=institution_id,
            his_bill_no=submission.his_bill_no,
            card_no=submission.card_no,
            person_id=holder.person_id,
            year=year,
            service_date=submission.service_date,
            request_digest=submission.digest(),
            bill=submission.bill,
            split=split(ZERO),  # a placeholder: the store splits against the current view
            state=BillState.OPEN,
            created_at_us=now_us,
            expires_at_us=now_us + _ttl_us(self.open_ttl),  # approved: bill_ttl (HoldExpiry)
            updated_at_us=now_us,
        )
        return self.store.submit(draft, split)

    def _check_held(
        self, institution_id: str, submission: Submission, person_id: str, level: int, now_us: int
    ) -> None:
        """The level's total applies to the institution's open bills for the person together
        (MedicalError ``bill_over_limit``), so that many bills cannot hold more than one. Read
        before the write: concurrent submissions of one institution for one card may pass it
        together. A bill already stored was answered before (`submit_bill`)."""
        held = self.store.held(institution_id, person_id, submission.service_date.year, now_us)
        refused = check_held(held, submission.bill, level, self.limits)
        if refused is not None:
            raise MedicalError("bill_over_limit", refused)

    def bill_for(self, institution_id: str, bill_id: str) -> BillRecord:
        """An institution's own bill; another's is reported exactly like a missing one."""
        record = self.store.get(bill_id)
        if record is None:
            raise MedicalError("not_found", "no such bill")
        return _own(record, institution_id)

    def bill_numbered(self, institution_id: str, his_bill_no: str) -> BillRecord:
        """An institution's bill by its own number (exact, case-sensitive)."""
        return self.bill_for(institution_id, bill_id_for(institution_id, his_bill_no))

    def bills_of(
        self, institution_id: str, after_no: str, since: dt.datetime, limit: int
    ) -> list[BillRecord]:
        """A page of the institution's bills submitted since `since`, by bill number after
        `after_no` (MedicalStore.bills_of)."""
        return self.store.bills_of(institution_id, after_no, micros(since), limit)

    def cancel_bill(self, institution_id: str, bill_id: str, now: dt.datetime) -> BillRecord:
        return self._checked(bill_id, now, _Cancel(institution_id))[0]

    # -- from the switch ------------------------------------------------------------------------
    def get_bill(self, bill_id: str) -> BillRecord | None:
        return self.store.get(bill_id)

    def approve_bill(
        self,
        bill_id: str,
        institution_id: str,
        card_no: str,
        now: dt.datetime,
        amount_fen: int | None = None,
    ) -> BillRecord:
        """The POS's 0200 for the bill: the institution, the amount (when given: the bill's
        total) and the card must be the bill's, checked in that order. One write: the checks see
        the bill as it is inside the store's transaction; an open bill past its expiry is expired
        (durably) and refused."""
        check = _Approval(institution_id, card_no, micros(now), amount_fen)
        return _approved(self._checked(bill_id, now, check))

    async def approve_bill_async(
        self,
        bill_id: str,
        institution_id: str,
        card_no: str,
        now: dt.datetime,
        amount_fen: int | None = None,
    ) -> BillRecord:
        """:meth:`approve_bill` from the event loop (the daemon's 0200): the store's write is
        awaited on its writer, with no thread hop on the SQLite default."""
        now_us = micros(now)  # once: a zone-aware timestamp costs a microsecond
        check = _Approval(institution_id, card_no, now_us, amount_fen)
        try:
            found = await self.store.transition_async(bill_id, BillState.APPROVED, now_us, check)
        except KeyError:
            raise MedicalError("not_found", "no such bill") from None
        return _approved(found)

    def _checked(
        self, bill_id: str, now: dt.datetime, check: Callable[[BillRecord], BillState]
    ) -> tuple[BillRecord, bool]:
        try:
            return self.store.transition(bill_id, BillState.APPROVED, micros(now), check)
        except KeyError:
            raise MedicalError("not_found", "no such bill") from None

    def complete_bill(self, bill_id: str, now: dt.datetime) -> tuple[BillRecord, bool]:
        """All card debits confirmed (or the rest paid in cash): commit the accumulators once;
        the caller posts the ledger's BillCompletion with `record.split.pooled_fen`."""
        return self.store.transition(bill_id, BillState.COMPLETED, micros(now))

    def complete_paid_bill(
        self, bill_id: str, personal_account_fen: int, now: dt.datetime
    ) -> tuple[BillRecord, bool]:
        """:meth:`complete_bill` for a card debit of ``personal_account_fen``, in one write (one
        round trip for the advice, instead of a read then a write): MedicalError ``not_found``
        for an unknown bill, ``amount_mismatch`` when the debit is not the bill's
        personal-account share; BillStateError when the bill cannot complete (reversed,
        voided)."""
        check = _Paid(personal_account_fen)
        try:
            return self.store.transition(bill_id, BillState.COMPLETED, micros(now), check)
        except KeyError:
            raise MedicalError("not_found", "no such bill") from None

    async def complete_paid_bill_async(
        self, bill_id: str, personal_account_fen: int, now: dt.datetime
    ) -> tuple[BillRecord, bool]:
        """:meth:`complete_paid_bill` from the event loop (the daemon's advice)."""
        check = _Paid(personal_account_fen)
        try:
            return await self.store.transition_async(
                bill_id, BillState.COMPLETED, micros(now), check
            )
        except KeyError:
            raise MedicalError("not_found", "no such bill") from None

    @property
    def posts_with_ledger(self) -> bool:
        """Whether the store writes in the ledger's transactions (the embedded SQLite default,
        and the daemon's PostgreSQL): then a card debit, the bill it completes and the bill's
        pooled share are one write and one commit (:meth:`paid_completion_write`)."""
        return self.store.posts_with_ledger

    def paid_completion_write(
        self, bill_id: str, personal_account_fen: int, now: dt.datetime
    ) -> Callable[[sqlite3.Connection], tuple[BillRecord, bool]] | LedgerCall:
        """The write of :meth:`complete_paid_bill_async`, for the ledger to run behind the
        card debit that paid the share, in the same transaction
        (``SqliteLedger.post_and_call``, ``PgLedger.post_and_call``). It raises KeyError for an
        unknown bill, MedicalError ``amount_mismatch``, BillStateError. Only when
        :attr:`posts_with_ledger`."""
        write = self.store.transition_write(
            bill_id, BillState.COMPLETED, micros(now), _Paid(personal_account_fen)
        )
        if write is None:
            raise RuntimeError("the medical store does not write on the ledger's writer")
        return write

    async def close_in_cash_async(
        self, bill_id: str, institution_id: str, card_no: str, cash_fen: int, now: dt.datetime
    ) -> tuple[BillRecord, bool]:
        """A settled bill closed at the institution that owns it with its personal-account share
        paid in cash (no card debit): it completes — accumulators committed — once. MedicalError
        ``not_found`` (unknown, or another institution's), ``card_mismatch``,
        ``amount_mismatch`` (the cash is not the personal-account share); BillStateError when it
        cannot complete (never approved, reversed, voided, expired)."""

        check = _CashClose(institution_id, card_no, cash_fen)
        try:
            return await self.store.transition_async(
                bill_id, BillState.COMPLETED, micros(now), check
            )
        except KeyError:
            raise MedicalError("not_found", "no such bill") from None

    def reverse_bill(self, bill_id: str, now: dt.datetime) -> tuple[BillRecord, bool]:
        """A reversal before the card was debited: the reservation is released."""
        return self.store.transition(bill_id, BillState.REVERSED, micros(now))

    def void_bill(self, bill_id: str, now: dt.datetime) -> tuple[BillRecord, bool]:
        """A void: a completed bill's accumulators are rolled back, an approved one's released."""
        return self.store.transition(bill_id, BillState.VOIDED, micros(now))

    def expire_bills(self, now: dt.datetime, limit: int = EXPIRE_BATCH_MAX) -> list[str]:
        """Expire, releasing their reservations, the open bills past their expiry and the
        approved ones `bill_ttl` after submission (at most `limit` candidates a call); the ids
        expired. A candidate is read first, so an approved bill not yet due costs no write."""
        now_us = micros(now)
        due = HoldExpiry(now_us, _ttl_us(self.bill_ttl))
        expired = []
        for bill_id in self.store.expirable(now_us, min(limit, EXPIRE_BATCH_MAX)):
            record = self.store.get(bill_id)
            if record is None or due(record) is not BillState.EXPIRED:
                continue
            # decided again inside the write: a bill settled meanwhile is left as it is
            if self.store.transition(bill_id, BillState.EXPIRED, now_us, due)[1]:
                expired.append(bill_id)
        return expired

    def post_offline_purchase(
        self,
        psam_terminal_no: str,
        psam_serial: int,
        application_serial: str,
        institution_id: str,
        amount_fen: int,
        day: dt.date,
    ) -> bool:
        """An offline personal-account purchase with no bill counts when it posts, once per
        (PSAM terminal number, serial)."""
        holder = self.directory.cardholder_by_serial(application_serial)
        level = self.directory.institution_level(institution_id)
        policy = self.directory.policy(day.year)
        if holder is None or level is None or policy is None:
            raise MedicalError("unknown_card", "no cardholder, level or policy for the purchase")
        person = Person(holder.category)
        key = f"offline:{psam_terminal_no}:{psam_serial}"
        return self.store.post_offline(
            key,
            holder.person_id,
            day.year,
            partial(offline_delta, policy, person, level, amount_fen),
        )

    def accumulators(self, person_id: str, year: int) -> tuple[Totals, Totals]:
        return self.store.accumulators(person_id, year)

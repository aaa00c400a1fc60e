"""The bill service's refusals: :class:`MedicalError`, the refusal a caller maps to its
protocol, and the checks of a transition that depends on the bill (approve, pay, cancel, close in
cash), which `ledger.medical.service` hands to the store to run inside its write, in one round
trip. They are objects, not closures: the write may run in the ledger's writer process, so they
pickle, and :data:`CHECKS` names them for its wire."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.medical.bills import BillRecord, BillState


class MedicalError(Exception):
    """A refusal a caller maps to its protocol: `code` is stable (the HIS API's error code)."""

    def __init__(self, code: str, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.line = line  # the bill's line at fault, from 1; 0: none in particular

    def __reduce__(self) -> tuple[type[MedicalError], tuple[str, str, int]]:
        """Pickled as it was made (a refusal comes back from the ledger's writer process)."""
        return type(self), (self.code, str(self), self.line)


def _own(record: BillRecord, institution_id: str) -> BillRecord:
    """An institution's own bill; another's is reported exactly like a missing one."""
    if record.institution_id != institution_id:
        raise MedicalError("not_found", "no such bill")
    return record


@dataclass(frozen=True, slots=True)
class _Approval:
    """The checks of a POS's approval, run on the bill inside the store's write (an object,
    not a closure: the write may run in the ledger's writer process, so it must pickle)."""

    institution_id: str
    card_no: str
    now_us: int
    amount_fen: int | None

    def __call__(self, record: BillRecord) -> BillState:
        _own(record, self.institution_id)
        if self.amount_fen is not None and record.split.total_fen != self.amount_fen:
            raise MedicalError("amount_mismatch", "the amount is not the bill's total")
        if record.card_no != self.card_no:
            raise MedicalError("card_mismatch", "the bill is for another card")
        if record.expires_at_us < self.now_us and record.state is BillState.OPEN:
            return BillState.EXPIRED
        return BillState.APPROVED


def _approved(found: tuple[BillRecord, bool]) -> BillRecord:
    record, changed = found
    if record.state is BillState.EXPIRED and changed:
        raise MedicalError("expired", "the bill has expired")
    return record


@dataclass(frozen=True, slots=True)
class _Paid:
    """A card debit completes its bill when it is the bill's personal-account share."""

    personal_account_fen: int

    def __call__(self, record: BillRecord) -> BillState:
        if record.split.personal_account_fen != self.personal_account_fen:
            raise MedicalError("amount_mismatch", "not the bill's personal-account share")
        return BillState.COMPLETED


@dataclass(frozen=True, slots=True)
class _Cancel:
    """The HIS cancels its own bill."""

    institution_id: str

    def __call__(self, record: BillRecord) -> BillState:
        _own(record, self.institution_id)
        return BillState.CANCELLED


@dataclass(frozen=True, slots=True)
class _CashClose:
    """A settled bill closed in cash at the institution that owns it."""

    institution_id: str
    card_no: str
    cash_fen: int

    def __call__(self, record: BillRecord) -> BillState:
        _own(record, self.institution_id)
        if record.card_no != self.card_no:
            raise MedicalError("card_mismatch", "the bill is for another card")
        if record.split.personal_account_fen != self.cash_fen:
            raise MedicalError("amount_mismatch", "not the bill's personal-account share")
        return BillState.COMPLETED


#: The checks that run inside the store's write, for the writer process's wire.
CHECKS: tuple[type, ...] = (_Approval, _Paid, _Cancel, _CashClose)

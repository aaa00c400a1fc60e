"""Hospital fee-record files (the seed's periodic 费用记录) and their matching at day-end. Pure.

File format (specs/medical-files.md §3), framed by `ledger.medical.recordfile`, MACed under the
institution's fee-file key:

    H|FEERECORDS|<institution id>|<business date yyyymmdd>
    D|BILL|<bill id>|<card no>|<amount fen>|<fund fen>|<charged at yyyymmddhhmmss>
    D|OFFLINE|<PSAM terminal no>:<PSAM serial>|<card no>|<amount fen>|<fund fen>|<charged at>
    T|<record count>|<sum of the amounts, fen>
    M|<MAC>

For a BILL record the amount is the bill's total and the fund amount what the insurance paid
(personal account + pooled fund); for an OFFLINE record (a card purchase with no bill, matched
against the card debit its PSAM recorded) both are the amount debited from the card.

Matching (`match`) compares one institution's records for a business date with what the centre
settled: each difference is a ledger ReviewItem, keyed so that running the match again records
nothing new.

>>> record = FeeRecord(2, FeeKind.BILL, "0123456789ABCDEF", "6200000000000000011", 40800, 39000,
...                    "20261125101500")
>>> [item.reason for item in match([record], {}, {})]
['fee_record_without_payment']
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger.core import ReviewItem, transfer_id
from ledger.medical.catalogue import parse_date
from ledger.medical.recordfile import (
    Framed,
    MedicalFileError,
    build,
    check_total,
    parse,
    parse_int,
)

KIND = "FEERECORDS"


class FeeKind(enum.Enum):
    BILL = "BILL"
    OFFLINE = "OFFLINE"


class FeeReview(enum.Enum):
    PAYMENT_WITHOUT_FEE_RECORD = "payment_without_fee_record"
    FEE_RECORD_WITHOUT_PAYMENT = "fee_record_without_payment"
    AMOUNT_DIFFERS = "fee_amount_differs"
    DUPLICATE_FEE_RECORD = "duplicate_fee_record"


@dataclass(frozen=True)
class FeeRecord:
    line: int
    kind: FeeKind
    reference: str  # bill id, or "<PSAM terminal no>:<serial>"
    card_no: str
    amount_fen: int
    fund_fen: int
    charged_at: str  # yyyymmddhhmmss


@dataclass(frozen=True)
class FeeFile:
    institution_id: str
    business_date: dt.date
    records: tuple[FeeRecord, ...]

    @property
    def amount_total_fen(self) -> int:
        return sum(record.amount_fen for record in self.records)


@dataclass(frozen=True)
class Settled:
    """What the centre settled for one reference: the total and the insurance-paid part."""

    amount_fen: int
    fund_fen: int


def _record(fields: tuple[str, ...], line: int) -> FeeRecord:
    if len(fields) != 6:
        raise MedicalFileError("a fee record has 6 fields", line)
    kind_text, reference, card_no, amount, fund, charged_at = fields
    try:
        kind = FeeKind(kind_text)
    except ValueError:
        raise MedicalFileError(f"record kind is BILL or OFFLINE, not {kind_text!r}", line) from None
    if kind is FeeKind.OFFLINE:
        terminal, _, serial = reference.partition(":")
        if not (terminal.isdigit() and len(terminal) == 12 and serial.isdigit()):
            raise MedicalFileError("an OFFLINE reference is <12-digit PSAM no>:<serial>", line)
    elif not (len(reference) == 16 and reference.isascii() and reference.isalnum()):
        raise MedicalFileError("a BILL reference is a 16-character bill id", line)
    if not (card_no.isdigit() and 12 <= len(card_no) <= 19):
        raise MedicalFileError("card number is 12 to 19 digits", line)
    if len(charged_at) != 14 or not charged_at.isdigit():
        raise MedicalFileError("charged at is yyyymmddhhmmss", line)
    amount_fen = parse_int(amount, "amount", line)
    fund_fen = parse_int(fund, "fund amount", line)
    if fund_fen > amount_fen:
        raise MedicalFileError("the fund amount exceeds the amount", line)
    return FeeRecord(line, kind, reference, card_no, amount_fen, fund_fen, charged_at)


def fee_file_from_framed(framed: Framed) -> FeeFile:
    if len(framed.header) != 2 or not framed.header[0]:
        raise MedicalFileError("the header is H|FEERECORDS|institution|business date", 1)
    records = tuple(_record(fields, n) for n, fields in enumerate(framed.records, start=2))
    check_total(framed, sum(record.amount_fen for record in records))
    return FeeFile(framed.header[0], parse_date(framed.header[1], 1), records)


def parse_fee_file(data: bytes) -> FeeFile:
    """Parse and check a fee-record file (its MAC is checked by the HSM, `filemac.verify`)."""
    return fee_file_from_framed(parse(data, KIND))


def build_fee_file(fees: FeeFile) -> bytes:
    """The file's bytes before its MAC line (records in the order given)."""
    records = [
        [r.kind.value, r.reference, r.card_no, str(r.amount_fen), str(r.fund_fen), r.charged_at]
        for r in fees.records
    ]
    header = [fees.institution_id, fees.business_date.strftime("%Y%m%d")]
    return build(KIND, header, records, amount_total_fen=fees.amount_total_fen)


def _review(
    reason: FeeReview, kind: FeeKind, reference: str, amount_fen: int, detail: str
) -> ReviewItem:
    subject = f"{kind.value}:{reference}"
    return ReviewItem(
        key=transfer_id("review", reason.value, subject),
        reason=reason.value,
        reference=subject,
        amount_fen=amount_fen,
        detail=detail,
    )


def match(
    records: Sequence[FeeRecord],
    settled_bills: Mapping[str, Settled],
    card_debits: Mapping[str, Settled],
) -> list[ReviewItem]:
    """Compare an institution's fee records for a business date with the bills it settled
    (by bill id) and the offline card debits its PSAMs recorded (by "<PSAM no>:<serial>").
    Returns the differences as review items, records first in file order, then payments
    without a record in reference order."""
    settled = {FeeKind.BILL: settled_bills, FeeKind.OFFLINE: card_debits}
    seen: set[tuple[FeeKind, str]] = set()
    out: list[ReviewItem] = []
    for record in records:
        key = (record.kind, record.reference)
        if key in seen:
            out.append(
                _review(
                    FeeReview.DUPLICATE_FEE_RECORD,
                    record.kind,
                    record.reference,
                    record.amount_fen,
                    f"line {record.line}",
                )
            )
            continue
        seen.add(key)
        paid = settled[record.kind].get(record.reference)
        if paid is None:
            out.append(
                _review(
                    FeeReview.FEE_RECORD_WITHOUT_PAYMENT,
                    record.kind,
                    record.reference,
                    record.amount_fen,
                    f"line {record.line}",
                )
            )
        elif (paid.amount_fen, paid.fund_fen) != (record.amount_fen, record.fund_fen):
            detail = (
                f"line {record.line}: fee record {record.amount_fen}/{record.fund_fen} fen,"
                f" settled {paid.amount_fen}/{paid.fund_fen} fen (amount/fund)"
            )
            out.append(
                _review(
                    FeeReview.AMOUNT_DIFFERS,
                    record.kind,
                    record.reference,
                    record.amount_fen - paid.amount_fen,
                    detail,
                )
            )
    for kind in FeeKind:
        for reference in sorted(set(settled[kind]) - {ref for k, ref in seen if k is kind}):
            out.append(
                _review(
                    FeeReview.PAYMENT_WITHOUT_FEE_RECORD,
                    kind,
                    reference,
                    settled[kind][reference].amount_fen,
                    "no fee record",
                )
            )
    return out

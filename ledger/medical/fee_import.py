"""Fee-record files in and out of the database, and the day-end match (IO around the pure
`ledger.medical.feerecords`). The day-end calls `fee_reviews(engine, institution, day)` and
records each returned ReviewItem with `Ledger.add_review` (idempotent by key)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, insert, select

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.core import ReviewItem
from ledger.medical import filemac
from ledger.medical.bills import BillState
from ledger.medical.feerecords import (
    KIND,
    FeeFile,
    FeeKind,
    FeeRecord,
    Settled,
    fee_file_from_framed,
    match,
)
from ledger.medical.recordfile import MedicalFileError, parse
from ledger.medical.sql_reference import digest
from ledger.medical.sql_store import write_transaction
from ledger.medical.tables import medical_bills, medical_fee_files, medical_fee_records
from ledger.schema import offline_records, psams


async def import_fee_file(
    engine: Engine, hsm: Hsm, file_key: KeyRef, data: bytes, now_us: int
) -> tuple[FeeFile, bool]:
    """Check the MAC and the totals, then store the records; (file, stored). The same bytes
    again store nothing; another file for the same institution and date is refused."""
    framed = parse(data, KIND)
    await filemac.verify(hsm, file_key, framed)
    fees = fee_file_from_framed(framed)
    file_digest = digest(data)
    f = medical_fee_files.c
    with write_transaction(engine) as connection:
        known = connection.execute(
            select(f.file_digest).where(
                f.institution_id == fees.institution_id, f.business_date == fees.business_date
            )
        ).first()
        if known is not None:
            if known.file_digest == file_digest:
                return fees, False
            raise MedicalFileError(
                f"a different fee file for {fees.institution_id} on {fees.business_date} "
                "was imported before"
            )
        connection.execute(
            insert(medical_fee_files).values(
                file_digest=file_digest,
                institution_id=fees.institution_id,
                business_date=fees.business_date,
                record_count=len(fees.records),
                amount_total_fen=fees.amount_total_fen,
                imported_at_us=now_us,
            )
        )
        if fees.records:
            connection.execute(
                insert(medical_fee_records),
                [
                    {
                        "file_digest": file_digest,
                        "line": r.line,
                        "kind": r.kind.value,
                        "reference": r.reference,
                        "card_no": r.card_no,
                        "amount_fen": r.amount_fen,
                        "fund_fen": r.fund_fen,
                        "charged_at": r.charged_at,
                    }
                    for r in fees.records
                ],
            )
    return fees, True


def stored_fee_records(engine: Engine, institution_id: str, day: dt.date) -> list[FeeRecord]:
    f, r = medical_fee_files.c, medical_fee_records.c
    with engine.connect() as connection:
        rows = connection.execute(
            select(medical_fee_records)
            .join(medical_fee_files, f.file_digest == r.file_digest)
            .where(f.institution_id == institution_id, f.business_date == day)
            .order_by(r.line)
        ).all()
    return [
        FeeRecord(
            row.line,
            FeeKind(row.kind),
            row.reference,
            row.card_no,
            row.amount_fen,
            row.fund_fen,
            row.charged_at,
        )
        for row in rows
    ]


def settled_bills(engine: Engine, institution_id: str, day: dt.date) -> dict[str, Settled]:
    """The institution's completed bills of service date `day`."""
    b = medical_bills.c
    with engine.connect() as connection:
        rows = connection.execute(
            select(b.bill_id, b.d_personal_account_fen, b.d_pooled_fen, b.d_self_pay_fen).where(
                b.institution_id == institution_id,
                b.service_date == day,
                b.state == BillState.COMPLETED.value,
            )
        ).all()
    return {
        row.bill_id: Settled(
            row.d_personal_account_fen + row.d_pooled_fen + row.d_self_pay_fen,
            row.d_personal_account_fen + row.d_pooled_fen,
        )
        for row in rows
    }


def offline_debits(engine: Engine, institution_id: str, day: dt.date) -> dict[str, Settled]:
    """Offline card debits of `day` (the card's date) by PSAMs of the institution, by
    "<PSAM terminal no>:<PSAM serial>"."""
    o, p = offline_records.c, psams.c
    prefix = day.strftime("%Y%m%d")
    with engine.connect() as connection:
        rows = connection.execute(
            select(o.psam_terminal_no, o.psam_serial, func.sum(o.amount_fen).label("amount"))
            .join(psams, p.psam_terminal_no == o.psam_terminal_no)
            .where(p.institution_id == institution_id, o.card_datetime.like(prefix + "%"))
            .group_by(o.psam_terminal_no, o.psam_serial)
        ).all()
    return {
        f"{row.psam_terminal_no}:{row.psam_serial}": Settled(int(row.amount), int(row.amount))
        for row in rows
    }


def fee_reviews(engine: Engine, institution_id: str, day: dt.date) -> list[ReviewItem]:
    """The day-end match of one institution's fee records for `day`."""
    return match(
        stored_fee_records(engine, institution_id, day),
        settled_bills(engine, institution_id, day),
        offline_debits(engine, institution_id, day),
    )

"""Fee-record files: format, MAC, import once, and the day-end match to review items."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import insert

from hsm.keys import KeyRef, KeyUsage
from hsm.lmk import Component
from hsm.soft import SoftHsm
from ledger.medical import filemac
from ledger.medical.bills import Submission
from ledger.medical.fee_import import fee_reviews, import_fee_file, stored_fee_records
from ledger.medical.feerecords import (
    FeeFile,
    FeeKind,
    FeeRecord,
    Settled,
    build_fee_file,
    match,
    parse_fee_file,
)
from ledger.medical.recordfile import MedicalFileError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.schema import offline_records, psams, terminals
from tests.support.hsm_keys import make_soft_hsm
from tests.support.medical_world import DAY, HOLDERS, NOW, NOW_US, sql_world

CARD = HOLDERS[0].card_no
AT = "20261125101500"
PSAM = "000000000001"


def rec(line: int, kind: FeeKind, reference: str, amount: int, fund: int) -> FeeRecord:
    return FeeRecord(line, kind, reference, CARD, amount, fund, AT)


def test_match_table() -> None:
    bills = {
        "AAAAAAAAAAAAAAA1": Settled(1000, 900),
        "AAAAAAAAAAAAAAA2": Settled(500, 500),
        "AAAAAAAAAAAAAAA3": Settled(700, 0),
    }
    debits = {f"{PSAM}:1": Settled(300, 300), f"{PSAM}:2": Settled(200, 200)}
    records = [
        rec(2, FeeKind.BILL, "AAAAAAAAAAAAAAA1", 1000, 900),  # matches
        rec(3, FeeKind.BILL, "AAAAAAAAAAAAAAA2", 500, 400),  # fund amount differs
        rec(4, FeeKind.BILL, "AAAAAAAAAAAAAAA9", 100, 100),  # no payment
        rec(5, FeeKind.OFFLINE, f"{PSAM}:1", 300, 300),  # matches
        rec(6, FeeKind.OFFLINE, f"{PSAM}:1", 300, 300),  # twice in the file
    ]
    found = [
        (item.reason, item.reference, item.amount_fen) for item in match(records, bills, debits)
    ]
    assert found == [
        ("fee_amount_differs", "BILL:AAAAAAAAAAAAAAA2", 0),
        ("fee_record_without_payment", "BILL:AAAAAAAAAAAAAAA9", 100),
        ("duplicate_fee_record", f"OFFLINE:{PSAM}:1", 300),
        ("payment_without_fee_record", "BILL:AAAAAAAAAAAAAAA3", 700),
        ("payment_without_fee_record", f"OFFLINE:{PSAM}:2", 200),
    ]
    assert (
        match(
            records[:1] + records[3:4],
            {k: bills[k] for k in list(bills)[:1]},
            {f"{PSAM}:1": debits[f"{PSAM}:1"]},
        )
        == []
    )


@pytest.mark.parametrize(
    "record",
    [
        ["BILL", "SHORT", CARD, "1", "1", AT],
        ["OFFLINE", "12:1", CARD, "1", "1", AT],
        ["CASH", "AAAAAAAAAAAAAAA1", CARD, "1", "1", AT],
        ["BILL", "AAAAAAAAAAAAAAA1", CARD, "1", "2", AT],
        ["BILL", "AAAAAAAAAAAAAAA1", "12", "1", "1", AT],
        ["BILL", "AAAAAAAAAAAAAAA1", CARD, "1", "1", "2026"],
    ],
)
def test_bad_records_refuse_the_file(record: list[str]) -> None:
    from ledger.medical.recordfile import build

    data = build("FEERECORDS", ["H001", "20261125"], [record], amount_total_fen=1)
    with pytest.raises(MedicalFileError):
        parse_fee_file(data + b"M|0000000000000000\n")


async def _key(hsm: SoftHsm) -> KeyRef:
    value = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    return await hsm.form_key("fee/H001", KeyUsage.FILE, [Component(value)], now=NOW)


def test_import_and_day_end_match(tmp_path: Path) -> None:
    engine = sql_world(tmp_path / "ledger.db")
    service = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
    bills = []
    for number in range(3):
        sub = Submission(f"N{number}", CARD, DAY, Bill((BillLine("A01", 10 + number, 1000),)))
        record, _ = service.submit_bill("H001", sub, NOW)
        service.approve_bill(record.bill_id, "H001", CARD, NOW)
        service.complete_bill(record.bill_id, NOW)
        bills.append(record)
    with engine.begin() as connection:
        connection.execute(
            insert(terminals).values(id="T0000001", institution_id="H001", kind="pos")
        )
        connection.execute(
            insert(psams).values(
                serial="PS1", psam_terminal_no=PSAM, institution_id="H001", terminal_id="T0000001"
            )
        )
        connection.execute(
            insert(offline_records),
            [
                {
                    "psam_terminal_no": PSAM,
                    "psam_serial": serial,
                    "terminal_id": "T0000001",
                    "batch_no": 1,
                    "application_serial": HOLDERS[0].application_serial,
                    "purse": "ED",
                    "amount_fen": 250 * serial,
                    "tac": "00000000",
                    "card_datetime": AT,
                    "received_at_us": NOW_US,
                }
                for serial in (1, 2)
            ],
        )
    split0 = bills[0].split
    fees = FeeFile(
        "H001",
        DAY,
        (
            rec(
                2,
                FeeKind.BILL,
                bills[0].bill_id,
                split0.total_fen,
                split0.personal_account_fen + split0.pooled_fen,
            ),
            rec(3, FeeKind.BILL, bills[1].bill_id, bills[1].split.total_fen + 100, 0),
            rec(4, FeeKind.OFFLINE, f"{PSAM}:1", 250, 250),
            rec(5, FeeKind.OFFLINE, f"{PSAM}:9", 10, 10),
        ),
    )

    async def body() -> None:
        hsm = make_soft_hsm()
        key = await _key(hsm)
        data = await filemac.seal(hsm, key, build_fee_file(fees))
        assert parse_fee_file(data) == fees
        forged = data.replace(f"|{split0.total_fen}|".encode(), b"|1|", 1)
        with pytest.raises(MedicalFileError):
            await import_fee_file(engine, hsm, key, forged, NOW_US)
        assert stored_fee_records(engine, "H001", DAY) == []
        assert (await import_fee_file(engine, hsm, key, data, NOW_US))[1]
        assert not (await import_fee_file(engine, hsm, key, data, NOW_US))[1]
        other = await filemac.seal(hsm, key, build_fee_file(FeeFile("H001", DAY, fees.records[:1])))
        with pytest.raises(MedicalFileError, match="different fee file"):
            await import_fee_file(engine, hsm, key, other, NOW_US)

    asyncio.run(body())
    found = sorted((item.reason, item.reference) for item in fee_reviews(engine, "H001", DAY))
    assert found == sorted(
        [
            ("fee_amount_differs", f"BILL:{bills[1].bill_id}"),
            ("payment_without_fee_record", f"BILL:{bills[2].bill_id}"),
            ("fee_record_without_payment", f"OFFLINE:{PSAM}:9"),
            ("payment_without_fee_record", f"OFFLINE:{PSAM}:2"),
        ]
    )
    engine.dispose()

"""The bank simulator's day-end files (simulators/bank_files.py): a return file answering a payout
file (all paid, or payments returned by id, payee or amount with a reason), statements from given
totals and from return files; MACed under the bank's file key, byte-deterministic, refused when
tampered with or under another key; a payout file that does not check is refused by the bank."""

from __future__ import annotations

import asyncio
import json

import pytest

from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.soft import SoftHsm
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend import payout_file as pf
from ledger.dayend import return_file as rf
from simulators.bank_files import (
    ReturnRule,
    StatementInput,
    issuer_savings_debits,
    return_file,
    statement_file,
)
from tests.support.daemon import new_hsm, now

PAYOUT = pf.PayoutFile(
    pf.PAYOUT,
    "2026-11-25",
    "b1",
    pf.INSURANCE,
    (
        pf.PayoutLine("20261125-I-h1", "h1", "6200000001", "第1医院", 12_345),
        pf.PayoutLine("20261125-I-h3", "h3", "6200000003", "第3医院", 500),
        pf.PayoutLine("20261125-I-p2", "p2", "6200000012", "定点药店2", 99_000),
    ),
)


def keys() -> tuple[SoftHsm, KeyRef, KeyRef]:
    hsm = new_hsm(MemoryKeyStore())

    async def make() -> tuple[KeyRef, KeyRef]:
        return (
            await hsm.generate_key("bank/b1/FILE", KeyUsage.FILE, now=now()),
            await hsm.generate_key("bank/b2/FILE", KeyUsage.FILE, now=now()),
        )

    own, other = asyncio.run(make())
    return hsm, own, other


@pytest.fixture(scope="module")
def hsm_keys() -> tuple[SoftHsm, KeyRef, KeyRef]:
    return keys()


def test_all_paid_then_one_returned_by_payee(hsm_keys: tuple[SoftHsm, KeyRef, KeyRef]) -> None:
    hsm, key, _ = hsm_keys
    payout, mac = asyncio.run(pf.build(hsm, key, PAYOUT))
    name, data = asyncio.run(return_file(hsm, key, payout, "2026-11-26", ReturnRule({})))
    assert name == "RETURN_PAYOUT_20261125_b1_INS_20261126.txt"
    answer = asyncio.run(rf.parse_return(hsm, key, data))
    assert answer.payout_file == "PAYOUT_20261125_b1_INS.txt" and answer.payout_mac == mac
    assert [x.status for x in answer.lines] == [rf.PAID] * 3
    assert [x.payout_line for x in answer.lines] == [1, 2, 3]
    rule = ReturnRule({"h3": ("R001", "")}, above_fen=50_000)
    _, data = asyncio.run(return_file(hsm, key, payout, "2026-11-26", rule))
    answer = asyncio.run(rf.parse_return(hsm, key, data))
    assert [(x.status, x.reason_code, x.reason) for x in answer.lines] == [
        (rf.PAID, "", ""),
        (rf.RETURNED, "R001", "account closed"),
        (rf.RETURNED, "R099", "above 50000 fen"),
    ]
    again = asyncio.run(return_file(hsm, key, payout, "2026-11-26", rule))
    assert again[1] == data  # byte-deterministic
    assert all(len(line) == pf.LINE_BYTES for line in data[:-1].split(b"\n"))
    with pytest.raises(bf.BankFileError, match="not in the payout file"):
        asyncio.run(return_file(hsm, key, payout, "2026-11-26", ReturnRule({"h9": ("R001", "")})))


def test_the_bank_refuses_a_payout_file_that_does_not_check(
    hsm_keys: tuple[SoftHsm, KeyRef, KeyRef],
) -> None:
    hsm, key, other = hsm_keys
    payout, _ = asyncio.run(pf.build(hsm, key, PAYOUT))
    forged = payout.replace(b"000000000012345", b"000000000012346", 1)
    with pytest.raises(pf.PayoutFileError):
        asyncio.run(return_file(hsm, key, forged, "2026-11-26", ReturnRule({})))
    with pytest.raises(pf.PayoutFileError, match="MAC"):
        asyncio.run(return_file(hsm, other, payout, "2026-11-26", ReturnRule({})))


def test_a_tampered_return_file_is_refused(hsm_keys: tuple[SoftHsm, KeyRef, KeyRef]) -> None:
    hsm, key, other = hsm_keys
    payout, _ = asyncio.run(pf.build(hsm, key, PAYOUT))
    _, data = asyncio.run(return_file(hsm, key, payout, "2026-11-26", ReturnRule({})))
    # the status of a paid line turned into returned, with a reason: the MAC no longer verifies
    line = data.split(b"\n")[1]
    status_at = 1 + 6 + 6 + 48 + 32 + 40 + 15 + 3
    changed = line[:status_at] + b"RR002" + line[status_at + 5 :]
    tampered = data.replace(line, changed)
    with pytest.raises(bf.BankFileError):
        asyncio.run(rf.parse_return(hsm, key, tampered))
    with pytest.raises(bf.BankFileError, match="MAC"):
        asyncio.run(rf.parse_return(hsm, other, data))
    with pytest.raises(bf.BankFileError, match="line break"):
        asyncio.run(rf.parse_return(hsm, key, data[:-1]))


def test_statements_from_totals_and_return_files(
    hsm_keys: tuple[SoftHsm, KeyRef, KeyRef],
) -> None:
    hsm, key, _ = hsm_keys
    payout, _ = asyncio.run(pf.build(hsm, key, PAYOUT))
    rule = ReturnRule({"20261125-I-h3": ("R002", "wrong number")})
    _, data = asyncio.run(return_file(hsm, key, payout, "2026-11-26", rule))
    answer = asyncio.run(rf.parse_return(hsm, key, data))
    given = StatementInput(
        "b1",
        "2026-11-26",
        bs.FUND,
        (("u1", 30_000), ("u2", 1)),
        paid=(answer,),
        others=(("x", 7, bs.DEBIT),),
    )
    name, sealed = asyncio.run(statement_file(hsm, key, given))
    assert name == "STMT_20261126_b1_FUND.txt"
    assert asyncio.run(statement_file(hsm, key, given))[1] == sealed
    s = asyncio.run(bs.parse_statement(hsm, key, sealed))
    assert [(e.kind, e.direction, e.amount_fen, e.counterparty) for e in s.entries] == [
        (bs.CONTRIBUTION, bs.CREDIT, 30_000, "u1"),
        (bs.CONTRIBUTION, bs.CREDIT, 1, "u2"),
        (bs.PAYOUT, bs.DEBIT, 12_345, "20261125-I-h1"),
        (bs.PAYOUT, bs.DEBIT, 99_000, "20261125-I-p2"),
        (bs.OTHER, bs.DEBIT, 7, "x"),
    ]
    assert len({e.line_ref for e in s.entries}) == 5
    assert s.total_fen(bs.CREDIT) == 30_001 and s.total_fen(bs.DEBIT) == 111_352
    tampered = sealed.replace(b"000000000030000", b"000000000030001", 1)
    with pytest.raises(bf.BankFileError):
        asyncio.run(bs.parse_statement(hsm, key, tampered))


def test_savings_debits_from_the_issuer_log() -> None:
    log = [
        json.dumps({"mti": "0200", "repeat": False, "amount_fen": 5000}),
        json.dumps({"mti": "0200", "repeat": True, "amount_fen": 5000}),
        json.dumps({"mti": "0200", "repeat": False, "amount_fen": 700}),
        json.dumps({"mti": "0420", "repeat": False, "amount_fen": 700}),
        "bank issuer 01020000 on 127.0.0.1:5811",
    ]
    assert issuer_savings_debits(log) == 5000


def test_a_refund_file_is_decrypted_and_answered(hsm_keys: tuple[SoftHsm, KeyRef, KeyRef]) -> None:
    hsm, key, _ = hsm_keys
    refund = pf.PayoutFile(
        pf.REFUND,
        "2026-11-25",
        "b1",
        pf.EP,
        (pf.PayoutLine("20261125-R-0000000001", "0000000001", "6222000011", "王伟", 300),),
    )
    data, _ = asyncio.run(pf.build(hsm, key, refund))
    assert b"MSREFUND" not in data  # encrypted: it names a cardholder
    rule = ReturnRule({"0000000001": ("R004", "")})
    name, answer = asyncio.run(return_file(hsm, key, data, "2026-11-26", rule))
    assert name == "RETURN_REFUND_20261125_b1_EP_20261126.txt"
    (line,) = asyncio.run(rf.parse_return(hsm, key, answer)).lines
    assert (line.status, line.reason_code, line.reason) == (rf.RETURNED, "R004", "account frozen")
    assert line.account_no == "**********" and b"6222000011" not in answer  # the card number

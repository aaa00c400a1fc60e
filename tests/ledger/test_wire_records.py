"""The writer's answers (a bill's record, a paid bill's completion, the balances before a
posting) cross to the daemon equal, every field of the same type; a balance (a `Balances`
read's) smaller than by its fields (issue 25)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import pickle

import pytest

from ledger.core import AccountFlags, Balance, TransferResult
from ledger.crossing import sqlite_writer
from ledger.events import BillCompletion
from ledger.kinds import AccountKind
from ledger.medical.accumulators import ZERO
from ledger.medical.bills import BillRecord, BillState
from ledger.medical.policy import Category
from ledger.medical.split import Bill, BillLine, Split
from ledger.writer.jobs import CalledAndPosted, Posted, PostedThenCalled
from ledger.writer.wire import PROTOCOL, Received, Sent, Wire

BALANCES = [
    Balance("pf-1", AccountKind.PERSONAL_FUND, AccountFlags.NEVER_NEGATIVE, 10**15, 7, False),
    Balance("pool", AccountKind.POOLED_FUND, AccountFlags.NONE, 0, 123_456_789, True),
    Balance("ep-9", AccountKind.CARD_EP_SHADOW, AccountFlags(0), -1, 0, False),
]


def _record(state: BillState) -> BillRecord:
    split = Split(
        rules_version=3,
        policy_year=2026,
        catalogue_version=7,
        institution_level=2,
        category=list(Category)[-1],
        special_category=None,
        total_fen=10_001,
        personal_account_fen=4_000,
        pooled_fen=5_001,
        self_pay_fen=1_000,
        lines=(),
        delta=dataclasses.replace(ZERO, eligible_fen=9_001),
        notes=("note",),
    )
    bill = Bill((BillLine("A01", 2, 5_000),), special_category="x")
    return BillRecord(
        "9054CA9CBE34A38E", "H001", "2026-000123", "6222020000001234", "P1", 2026,
        dt.date(2026, 12, 7), "ab" * 32, bill, split, state, 1_700_000_000_000_001,
        1_700_000_600_000_000, 1_700_000_000_000_002,
    )  # fmt: skip


RECORDS = [_record(state) for state in BillState]
ANSWER = PostedThenCalled(
    Posted([TransferResult.CREATED, TransferResult.EXISTS], {"ed:1": -1, "payins:h1": 10**15}),
    CalledAndPosted(
        (BillCompletion("9054CA9CBE34A38E", "H001", 5_001), True), [TransferResult.CREATED]
    ),
)


def _fields(value: object) -> list[tuple[type, object]]:
    names = [f.name for f in dataclasses.fields(value)]  # type: ignore[arg-type]
    return [(type(getattr(value, n)), getattr(value, n)) for n in names]


def _by_fields(value: object) -> bytes:
    """``value`` pickled as the wire did before: its class and fields, enums as pickle does."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, PROTOCOL)
    pickler.dispatch_table = {Balance: lambda b: (Balance, tuple(v for _, v in _fields(b)))}
    pickler.dump(value)
    return out.getvalue()


@pytest.mark.parametrize("value", BALANCES + RECORDS, ids=repr)
def test_a_record_pickles_to_itself(value: object) -> None:
    got = pickle.loads(pickle.dumps(value, PROTOCOL))
    assert got == value and hash(got) == hash(value)
    assert _fields(got) == _fields(value)
    assert all(
        getattr(got, f) is getattr(value, f)
        for f in ("kind", "flags", "state")
        if hasattr(value, f)
    )


@pytest.mark.parametrize("balance", BALANCES, ids=repr)
def test_a_balance_pickles_smaller_than_by_its_fields(balance: Balance) -> None:
    assert len(pickle.dumps(balance, PROTOCOL)) < len(_by_fields(balance))


def test_the_answers_cross_the_wire_equal_and_smaller() -> None:
    wire = Wire(sqlite_writer())
    sent, received = Sent(wire), Received(wire)
    message: list[tuple[int, object, None]]
    message = [(n, ANSWER if n % 2 else (record, False), None) for n, record in enumerate(RECORDS)]
    message.append((len(message), BALANCES, None))
    data = sent.dump(message)
    got = received.load(data)
    assert got == message
    answer = got[1][1]
    assert _fields(got[0][1][0]) == _fields(RECORDS[0])
    assert _fields(answer.called.value[0]) == _fields(ANSWER.called.value[0])  # type: ignore[union-attr]
    assert answer.posted.before == ANSWER.posted.before
    assert [_fields(b) for b in got[-1][1]] == [_fields(b) for b in BALANCES]
    assert got[-1][1][0].kind is AccountKind.PERSONAL_FUND
    assert type(answer.posted.results[0]) is TransferResult
    assert len(data) < len(pickle.dumps(message, PROTOCOL))

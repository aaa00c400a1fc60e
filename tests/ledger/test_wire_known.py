"""The wire sends the classes, enum members and functions its `Crossing` names by number — both
ends' pickle memo starts with them — not by name (an import lookup on each load, about 5 µs):
a job and an answer cross equal, the named objects themselves, in one frame (issue 25)."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import pickletools
from pathlib import Path

import pytest

from ledger.core import LedgerUnavailable, Transfer, TransferResult
from ledger.crossing import sqlite_writer
from ledger.events import TransferCode, purchases
from ledger.medical.bills import BillState
from ledger.medical.refusals import CHECKS
from ledger.medical.sql_writes import TransitionWrite
from ledger.migrate import upgrade_sqlite
from ledger.writer.jobs import Posted, PostedThenCalled, PostThenCall
from ledger.writer.process import ProcessWriter
from ledger.writer.wire import Crossing, Received, Sent, Wire, _maker

WIRE = Wire(sqlite_writer())


def _job(n: int) -> PostThenCall:
    transfer = Transfer(f"t{n}", f"ed:{n}", "payins:h1", 1_000 + n, TransferCode.CARD_DEBIT, "r")
    paid = CHECKS[1](1_000 + n)
    write = TransitionWrite(f"B{n:015d}", BillState.COMPLETED, 1_700_000_000_000_000 + n, paid)
    return PostThenCall(
        [transfer],
        [],
        purchases.debit_accounts,
        write,
        purchases.bill_completion_postings,
        purchases.paid_bill,
    )


def _globals(data: bytes) -> list[str]:
    """The opcodes of ``data`` that name a module's object."""
    return [op.name for op, _, _ in pickletools.genops(data) if "GLOBAL" in op.name]


def test_a_job_crosses_with_no_class_or_function_by_name() -> None:
    jobs = [(n, _job(n)) for n in range(3)]
    data = WIRE.dumps(jobs)
    assert _globals(data) == []
    assert b"debit_accounts" not in data and b"PostThenCall" not in data
    got = WIRE.loads(data)
    assert got == jobs
    op = got[0][1]
    assert op.opening is purchases.debit_accounts and op.brief is purchases.paid_bill
    assert op.write.target is BillState.COMPLETED and type(op.write.check) is CHECKS[1]


def test_many_objects_in_one_message_keep_their_numbers() -> None:
    """Past 256 memo entries a put names its index in four bytes: still each its own."""
    jobs = [(n, _job(n)) for n in range(200)]
    assert WIRE.loads(WIRE.dumps(jobs)) == jobs


def test_an_object_not_named_still_crosses_by_name() -> None:
    value = [pickle.PickleError, TransferResult.CREATED]
    data = WIRE.dumps(value)
    assert _globals(data) != []
    assert WIRE.loads(data) == value


def test_answers_cross_with_the_kept_objects_by_number() -> None:
    sent, received = Sent(WIRE), Received(WIRE)
    answer: PostedThenCalled[object] = PostedThenCalled(
        Posted([TransferResult.CREATED], {"ed:1": 5}), None
    )
    for _ in range(2):
        data = sent.dump([(7, answer, None)])
        assert _globals(data) == []
        assert received.load(data) == [(7, answer, None)]


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


def test_a_slotted_record_is_made_without_its_init_and_stays_frozen() -> None:
    names = [f.name for f in dataclasses.fields(Transfer)]
    make = _maker(Transfer, names)
    assert make is not None
    transfer = Transfer("t", "a", "b", 1, TransferCode.CARD_DEBIT, "r")
    made = make(*(getattr(transfer, name) for name in names))
    assert type(made) is Transfer and made == transfer and hash(made) == hash(transfer)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.amount_fen = 2  # type: ignore[misc]
    reduced = WIRE.table[Transfer](transfer)[0]  # a maker of the wire's own, sent by number
    assert reduced is not Transfer and any(reduced is known for known in WIRE.known)
    assert WIRE.loads(WIRE.dumps(transfer)) == transfer


def test_a_record_whose_init_checks_is_made_by_its_init() -> None:
    assert _maker(_Checked, ["value"]) is None
    wire = Wire(Crossing(records=(_Checked,)))
    assert wire.table[_Checked](_Checked(3))[0] is _Checked


def test_a_child_numbering_other_objects_does_not_start(tmp_path: Path) -> None:
    """A child whose wire numbers other objects would read one job's check as another's."""
    path = tmp_path / "ledger.db"
    upgrade_sqlite(path)
    writer = ProcessWriter(path, crossing="tests.support.skewed_crossing:skewed")
    with pytest.raises(LedgerUnavailable, match="another wire"):
        writer.start()
    same = ProcessWriter(path, crossing="ledger.crossing:sqlite_writer")
    same.start()
    asyncio.run(same.stop())


def test_a_record_whose_fields_were_reordered_changes_the_fingerprint() -> None:
    """Same module, same name, fields in another order: the child would fill the wrong slots,
    so the parent must see another fingerprint."""

    def record(*names: str) -> type:
        made = dataclasses.make_dataclass("Moved", names, frozen=True, slots=True)
        made.__module__ = __name__
        return made

    one = Wire(Crossing(records=(record("amount_fen", "account"),)))
    other = Wire(Crossing(records=(record("account", "amount_fen"),)))
    again = Wire(Crossing(records=(record("amount_fen", "account"),)))
    assert one.fingerprint() != other.fingerprint()
    assert one.fingerprint() == again.fingerprint()

"""The SQLite ledger's writer in a process of its own (`ledger.writer.process`): the same
ledger as with the writer thread (the scenario table, the medical store's writes and refusals
crossing back), answers only after the commit, a job that cannot cross failing alone, the
child's end failing whoever waits, and the answers' pickling (enum members and kept splits by
number) giving back what plain pickle gives."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import pickle
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.core import (
    AccountFlags,
    Health,
    LedgerUnavailable,
    Transfer,
    TransferResult,
    new_account,
)
from ledger.crossing import sqlite_writer
from ledger.kinds import AccountKind
from ledger.medical.bills import BillState, BillStateError, Submission
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine, Split
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.sqlite_ledger import CROSSING, SqliteLedger
from ledger.writer.jobs import AllBalances, Call
from ledger.writer.process import ProcessWriter, Restarts
from ledger.writer.wire import SENT_MAX, Received, Sent, Wire
from tests.support.medical_world import HOLDERS, NOW, sql_world
from tests.support.scenario_table import run_scenario

CARD = HOLDERS[0].card_no


def test_the_scenario_table_on_the_writer_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = SqliteLedger.open(tmp_path / "ledger.db", process=True)
        assert isinstance(ledger.writer, ProcessWriter)
        try:
            await run_scenario(ledger)
        finally:
            await ledger.close()

    asyncio.run(scenario())


def test_bills_through_the_writer_process_and_their_refusals(tmp_path: Path) -> None:
    """The HIS's submission from a thread (`run`), the POS's approval and completion from the
    loop; refusals come back as the errors the handlers map to response codes."""
    path = tmp_path / "ledger.db"
    engine = sql_world(path)

    async def flow() -> None:
        ledger = SqliteLedger.open(path, process=True)
        assert isinstance(ledger.writer, ProcessWriter)
        await ledger.writer.attach()
        store = SqlMedicalStore(engine, ledger_writer=ledger.writer)
        service = MedicalService(store, SqlDirectory(engine))
        bill = Bill((BillLine("A01", 2, 1000), BillLine("B01", 1, 1500)))
        submission = Submission("H-1", CARD, NOW.date(), bill)
        try:
            record, created = await asyncio.to_thread(service.submit_bill, "H001", submission, NOW)
            again, created_again = await asyncio.to_thread(
                service.submit_bill, "H001", submission, NOW
            )
            assert created and not created_again and again == record
            with pytest.raises(MedicalError) as refused:
                await service.approve_bill_async(record.bill_id, "H001", "6" * 16, NOW)
            assert refused.value.code == "card_mismatch"
            approved = await service.approve_bill_async(record.bill_id, "H001", CARD, NOW)
            assert approved.state is BillState.APPROVED and approved.split == record.split
            personal = record.split.personal_account_fen
            with pytest.raises(MedicalError) as wrong:
                await service.complete_paid_bill_async(record.bill_id, personal + 1, NOW)
            assert wrong.value.code == "amount_mismatch"
            done, changed = await service.complete_paid_bill_async(record.bill_id, personal, NOW)
            assert done.state is BillState.COMPLETED and changed
            later = NOW + dt.timedelta(seconds=1)
            with pytest.raises(BillStateError) as state:
                await asyncio.to_thread(service.reverse_bill, record.bill_id, later)
            assert state.value.state is BillState.COMPLETED
            with pytest.raises(RuntimeError, match="cannot wait for its own"):
                ledger.writer.run(AllBalances())  # on the loop's thread: it would never return
        finally:
            store.close()
            await ledger.close()
        with sqlite3.connect(path) as db:  # durable, written by the child
            (state_value,) = db.execute(
                "SELECT state FROM medical_bills WHERE bill_id = ?", (record.bill_id,)
            ).fetchone()
        assert state_value == BillState.COMPLETED.value

    asyncio.run(flow())
    engine.dispose()


def test_a_job_that_cannot_cross_fails_alone(tmp_path: Path) -> None:
    async def jobs() -> None:
        writer = ProcessWriter(tmp_path / "ledger.db", crossing=CROSSING)
        from ledger.migrate import upgrade_sqlite

        upgrade_sqlite(tmp_path / "ledger.db")
        writer.start()
        try:
            closure = writer.submit(Call(lambda db: 1))  # a closure: no pickle for it
            fine = writer.submit(AllBalances())
            results = await asyncio.gather(closure, fine, return_exceptions=True)
            assert isinstance(results[0], RuntimeError)
            assert "cannot go to the writer process" in str(results[0])
            assert results[1] == []
        finally:
            await writer.stop()

    asyncio.run(jobs())


ACCOUNTS = [new_account(AccountKind.CONTRIBUTIONS_RECEIVABLE, "u1")]
ACCOUNTS += [new_account(AccountKind.PERSONAL_FUND, "c1")]
WAIT_S = 20.0


async def _until(test: Callable[[], bool]) -> None:
    """Wait (bounded) for ``test`` to hold."""
    deadline = time.monotonic() + WAIT_S
    while not test():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_dead_child_fails_its_jobs_at_once_and_is_replaced(tmp_path: Path) -> None:
    """Killed with jobs in flight: each fails at once with LedgerUnavailable (or was answered:
    committed), later calls fail at once while it restarts, the dead child is reaped, a new one
    is attached, and the transfers retried by their ids post exactly once."""

    async def died() -> None:
        restarts = Restarts(delays_s=(0.2, 0.2), stable_s=60.0)
        ledger = SqliteLedger.open(tmp_path / "ledger.db", process=True, restarts=restarts)
        writer = ledger.writer
        assert isinstance(writer, ProcessWriter) and writer._process is not None
        await ledger.open_accounts(ACCOUNTS)
        transfers = [Transfer(f"t{n}", "contrib:u1", "pf:c1", 1 + n, 1) for n in range(200)]
        in_flight = [asyncio.ensure_future(ledger.post([t])) for t in transfers]
        await asyncio.sleep(0)  # sent at the end of this loop turn
        dead = writer._process
        os.kill(dead.pid, signal.SIGKILL)
        started = time.monotonic()
        answers = await asyncio.wait_for(asyncio.gather(*in_flight, return_exceptions=True), 10)
        assert all(
            a == [TransferResult.CREATED] or isinstance(a, LedgerUnavailable) for a in answers
        )
        assert any(isinstance(a, LedgerUnavailable) for a in answers)
        assert ledger.health() is Health.RESTARTING
        with pytest.raises(LedgerUnavailable, match="restarting"):
            await ledger.post(transfers[:1])  # at once, not after a wait
        assert time.monotonic() - started < 5.0
        await _until(lambda: ledger.health() is Health.OK)
        assert dead.poll() == -signal.SIGKILL  # reaped: no zombie
        assert writer.restarted == 1 and writer._process is not dead
        retried = await ledger.post(transfers)  # the lost answers retried: nothing doubled
        assert all(r in (TransferResult.CREATED, TransferResult.EXISTS) for r in retried)
        balance = await ledger.balance("pf:c1")
        assert balance is not None and balance.credits_posted_fen == sum(range(1, 201))
        await ledger.close()
        assert ledger.health() is Health.WRITER_ENDED

    asyncio.run(died())


def test_a_child_that_keeps_dying_is_given_up_after_its_restarts(tmp_path: Path) -> None:
    async def keeps_dying() -> None:
        restarts = Restarts(delays_s=(0.05,), stable_s=60.0)
        ledger = SqliteLedger.open(tmp_path / "ledger.db", process=True, restarts=restarts)
        writer = ledger.writer
        assert isinstance(writer, ProcessWriter)
        await writer.submit(AllBalances())
        children = []
        for _ in range(2):
            await _until(lambda: ledger.health() is Health.OK)
            assert writer._process is not None
            children.append(writer._process)
            os.kill(writer._process.pid, signal.SIGKILL)
            await _until(lambda: ledger.health() is not Health.OK)
        await _until(lambda: ledger.health() is Health.WRITER_ENDED)
        assert writer.restarted == 1  # the second death within stable_s: no second restart
        with pytest.raises(LedgerUnavailable, match="ledger is closed"):
            await writer.submit(AllBalances())
        await ledger.close()
        assert all(child.poll() == -signal.SIGKILL for child in children)

    asyncio.run(keeps_dying())


def test_a_thread_waits_for_its_answer_through_the_loop(tmp_path: Path) -> None:
    async def threads() -> None:
        ledger = SqliteLedger.open(tmp_path / "ledger.db", process=True)
        writer = ledger.writer
        assert isinstance(writer, ProcessWriter)
        await writer.attach()
        try:
            answers = await asyncio.gather(
                *(asyncio.to_thread(writer.run, AllBalances()) for _ in range(8))
            )
            assert answers == [[]] * 8
        finally:
            await ledger.close()
        with pytest.raises(RuntimeError, match="ledger is closed"):
            await asyncio.to_thread(writer.run, AllBalances())

    asyncio.run(threads())
    assert threading.active_count() >= 1


def _split(n: int) -> Split:
    base = Split(
        rules_version=1,
        policy_year=2026,
        catalogue_version=1,
        institution_level=1,
        category=HOLDERS[0].category,
        special_category=None,
        total_fen=1000 + n,
        personal_account_fen=1000 + n,
        pooled_fen=0,
        self_pay_fen=0,
        lines=(),
        delta=dataclasses.replace(_zero(), eligible_fen=n),
        notes=(),
    )
    return base


def _zero():  # type: ignore[no-untyped-def]
    from ledger.medical.accumulators import ZERO

    return ZERO


def test_the_answers_pickling_gives_what_plain_pickle_gives() -> None:
    """Enum members by number (never a plain 0 taken for AccountFlags.NONE), a split sent once
    then by number, more splits than the child remembers."""
    wire = Wire(sqlite_writer())
    sent, received = Sent(wire), Received(wire)
    splits = [_split(n) for n in range(SENT_MAX + 50)]
    messages = []
    for n, split in enumerate(splits):
        answer = [(n, (split, splits[0], BillState.APPROVED), None)]
        answer.append((n, [TransferResult.CREATED, 0, AccountFlags.NONE, 1], None))
        messages.append(answer)
    messages.append([(0, [AccountFlags.NEVER_NEGATIVE, AccountFlags(0), 0, 1], None)])
    for message in messages:
        got = received.load(sent.dump(message))
        assert got == pickle.loads(pickle.dumps(message))
        assert [type(v) for v in _leaves(got)] == [type(v) for v in _leaves(message)]
    again = received.load(sent.dump([(1, splits[-1], None)]))  # by number: the same object
    assert again[0][1] is received.load(sent.dump([(1, splits[-1], None)]))[0][1]


def _leaves(value: object) -> list[object]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]

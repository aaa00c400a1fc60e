"""Group commit of the SQL medical store: concurrent writes share commits, each caller gets its
own result or its own exception, and everything acknowledged is durable."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ledger.medical.bills import BillRecord, BillState, BillStateError, Submission
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import LedgerWrites, SqlMedicalStore, sqlite_engine
from ledger.writer.engine import Writer
from ledger.writer.store import SqliteStore
from tests.support.medical_world import DAY, HOLDERS, NOW, sql_service

CARD, RETIREE = HOLDERS[0].card_no, HOLDERS[1].card_no
THREADS = 24


@pytest.fixture
def service(tmp_path: Path) -> Iterator[MedicalService]:
    svc = sql_service(tmp_path / "ledger.db")
    yield svc
    store = svc.store
    assert isinstance(store, SqlMedicalStore)
    store.close()
    store.engine.dispose()


def _store(service: MedicalService) -> SqlMedicalStore:
    assert isinstance(service.store, SqlMedicalStore)
    return service.store


def _submit(service: MedicalService, count: int, card: str = CARD) -> list[BillRecord]:
    return [
        service.submit_bill(
            "H001", Submission(f"N{n}", card, DAY, Bill((BillLine("A01", 1, 1000),))), NOW
        )[0]
        for n in range(count)
    ]


def _hold(store: SqlMedicalStore | LedgerWrites) -> tuple[threading.Thread, threading.Event]:
    """A batch that holds the write transaction open until released."""
    writer = store.writer if isinstance(store, SqlMedicalStore) else store
    assert writer is not None
    started, release = threading.Event(), threading.Event()

    def hold(_: sqlite3.Connection) -> None:
        started.set()
        assert release.wait(timeout=30)

    held = threading.Thread(target=writer.run, args=(hold,))
    held.start()
    assert started.wait(timeout=10)
    return held, release


def _queued_behind_a_held_batch(
    store: SqlMedicalStore, calls: list[Callable[[], object]]
) -> list[object]:
    """Run `calls` from threads while the writer is busy, so they all queue and go in the
    batches after it; returns each call's result or exception, in order."""
    held, release = _hold(store)

    def call(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call, fn) for fn in calls]
        deadline = time.monotonic() + 10
        while store.writer.waiting < len(calls) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert store.writer.waiting == len(calls)
        release.set()
        results = [future.result(timeout=30) for future in futures]
    held.join()
    return results


def test_concurrent_transitions_share_commits_and_each_gets_its_own_result(
    service: MedicalService,
) -> None:
    store = _store(service)
    records = _submit(service, THREADS)
    before = store.writer.stats.batches
    results = _queued_behind_a_held_batch(
        store,
        [
            (lambda b=r.bill_id: service.approve_bill(b, "H001", CARD, NOW))  # type: ignore[misc]
            for r in records
        ],
    )
    for record, result in zip(records, results, strict=True):
        assert isinstance(result, BillRecord)
        assert (result.bill_id, result.state) == (record.bill_id, BillState.APPROVED)
    # the held batch, then every approval in one more (THREADS < the batch maximum)
    assert store.writer.stats.batches - before == 2
    assert store.writer.stats.largest == THREADS


def test_a_failing_write_fails_alone(service: MedicalService) -> None:
    store = _store(service)
    records = _submit(service, 6)
    service.reverse_bill(records[1].bill_id, NOW)
    calls: list[Callable[[], object]] = [
        lambda: service.approve_bill(records[0].bill_id, "H001", CARD, NOW),
        lambda: service.approve_bill(records[1].bill_id, "H001", CARD, NOW),  # reversed
        lambda: service.complete_bill("FFFFFFFFFFFFFFFF", NOW),  # unknown
        lambda: service.approve_bill(records[2].bill_id, "H002", CARD, NOW),  # not theirs
        lambda: service.approve_bill(records[3].bill_id, "H001", RETIREE, NOW),  # other card
        lambda: service.approve_bill(records[4].bill_id, "H001", CARD, NOW),
    ]
    results = _queued_behind_a_held_batch(store, calls)
    assert isinstance(results[0], BillRecord) and results[0].state is BillState.APPROVED
    assert isinstance(results[1], BillStateError)
    assert isinstance(results[2], KeyError)
    assert isinstance(results[3], MedicalError) and results[3].code == "not_found"
    assert isinstance(results[4], MedicalError) and results[4].code == "card_mismatch"
    assert isinstance(results[5], BillRecord) and results[5].state is BillState.APPROVED
    states = [service.get_bill(r.bill_id).state for r in records]  # type: ignore[union-attr]
    assert states == [
        BillState.APPROVED,
        BillState.REVERSED,
        BillState.OPEN,
        BillState.OPEN,
        BillState.APPROVED,
        BillState.OPEN,
    ]


def test_a_write_failing_halfway_leaves_nothing_and_spares_the_batch(
    service: MedicalService,
) -> None:
    store = _store(service)
    records = _submit(service, 2)

    def half(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE medical_bills SET state = 'voided' WHERE bill_id = ?", (records[0].bill_id,)
        )
        raise RuntimeError("halfway")

    results = _queued_behind_a_held_batch(
        store,
        [
            lambda: store.writer.run(half),
            lambda: service.approve_bill(records[1].bill_id, "H001", CARD, NOW),
        ],
    )
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], BillRecord)
    assert service.get_bill(records[0].bill_id).state is BillState.OPEN  # type: ignore[union-attr]


def test_acknowledged_writes_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    service = sql_service(path)
    records = _submit(service, THREADS)
    with ThreadPoolExecutor(8) as pool:
        approved = list(
            pool.map(lambda r: service.approve_bill(r.bill_id, "H001", CARD, NOW), records)
        )
        completed = list(pool.map(lambda r: service.complete_bill(r.bill_id, NOW), records))
    assert all(r.state is BillState.APPROVED for r in approved)
    assert all(changed and r.state is BillState.COMPLETED for r, changed in completed)
    committed = service.accumulators("P11", 2026)[0]
    store = _store(service)
    store.close()
    store.engine.dispose()

    engine = sqlite_engine(path)  # reopened: what was acknowledged is there
    again = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
    for record in records:
        found = again.get_bill(record.bill_id)
        assert found is not None and found.state is BillState.COMPLETED
    assert again.accumulators("P11", 2026) == (committed, committed)
    assert committed.eligible_fen == 1000 * THREADS
    engine.dispose()


def test_concurrent_completions_commit_each_bill_once(service: MedicalService) -> None:
    records = _submit(service, 8)
    for record in records:
        service.approve_bill(record.bill_id, "H001", CARD, NOW)
    with ThreadPoolExecutor(THREADS) as pool:  # every bill completed three times at once
        outcomes = list(pool.map(lambda r: service.complete_bill(r.bill_id, NOW), records * 3))
    assert sum(changed for _, changed in outcomes) == len(records)
    committed, view = service.accumulators("P11", 2026)
    assert committed == view and committed.eligible_fen == 8000


def test_reads_do_not_wait_for_the_writer(service: MedicalService) -> None:
    store = _store(service)
    record = _submit(service, 1)[0]
    held, release = _hold(store)
    try:  # a write transaction is open and not committing: reads answer at once
        assert service.bill_for("H001", record.bill_id).state is BillState.OPEN
        assert service.accumulators("P11", 2026)[1].eligible_fen == 1000
    finally:
        release.set()
        held.join()


def test_the_writer_closes_and_refuses(tmp_path: Path) -> None:
    service = sql_service(tmp_path / "ledger.db")
    store = _store(service)
    _submit(service, 1)
    store.close()
    with pytest.raises(RuntimeError):
        _submit(service, 1)
    store.engine.dispose()


class _ForeignKeys(SqliteStore):
    """The writer's statements on a connection that checks foreign keys."""

    def connect(self) -> None:
        super().connect()
        self.conn.execute("PRAGMA foreign_keys = ON")  # not inside a transaction: a no-op there


def _own_writes(path: Path) -> LedgerWrites:
    writer: Writer = _ForeignKeys(path).writer(batch_max=256)
    writer.start()
    return LedgerWrites(writer, own=writer)


def test_a_failed_commit_fails_only_its_culprit(tmp_path: Path) -> None:
    """The batch's COMMIT fails (a deferred check): nothing of it is durable, and it runs again
    job by job, so the culprit alone fails (the engine's rule, the ledger's too)."""
    writer = _own_writes(tmp_path / "w.db")
    writer.run(lambda db: db.execute("CREATE TABLE p (id PRIMARY KEY)"))
    writer.run(
        lambda db: db.execute(
            "CREATE TABLE c (id PRIMARY KEY, p REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    )
    held, release = _hold(writer)
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(writer.run, lambda db: db.execute("INSERT INTO p VALUES (1)").rowcount)
        while writer.waiting < 1:
            time.sleep(0.001)
        dangling = pool.submit(writer.run, lambda db: db.execute("INSERT INTO c VALUES (1, 9)"))
        while writer.waiting < 2:
            time.sleep(0.001)
        failed = writer.stats.commits_failed
        release.set()
        assert good.result(timeout=30) == 1
        with pytest.raises(sqlite3.IntegrityError):
            dangling.result(timeout=30)
    held.join()
    assert writer.run(lambda db: db.execute("SELECT count(*) FROM p").fetchone()[0]) == 1
    assert writer.run(lambda db: db.execute("SELECT count(*) FROM c").fetchone()[0]) == 0
    assert writer.stats.commits_failed - failed == 2  # the pair, then the culprit alone
    writer.close()


def test_an_operations_own_sqlite_error_fails_it_alone(tmp_path: Path) -> None:
    writer = _own_writes(tmp_path / "w.db")
    writer.run(lambda db: db.execute("CREATE TABLE t (x PRIMARY KEY)"))
    writer.run(lambda db: db.execute("INSERT INTO t VALUES (1)"))
    with pytest.raises(sqlite3.IntegrityError):
        writer.run(lambda db: db.execute("INSERT INTO t VALUES (1)"))
    assert writer.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0]) == 1
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.run(lambda db: None)


def test_submissions_in_one_batch_never_share_the_deductible(service: MedicalService) -> None:
    store = _store(service)
    before = store.writer.stats.batches
    calls: list[Callable[[], object]] = [
        (
            lambda n=n: service.submit_bill(  # type: ignore[misc]
                "H001",
                Submission(f"D{n}", CARD, DAY, Bill((BillLine("A01", 10, 1000),))),
                NOW,
            )[0]
        )
        for n in range(8)
    ]
    results = _queued_behind_a_held_batch(store, calls)
    assert store.writer.stats.batches - before == 2  # the held one, then all eight together
    deductibles = [r.split.delta.deductible_fen for r in results if isinstance(r, BillRecord)]
    assert sorted(deductibles) == [0] * 5 + [10000] * 3
    assert service.accumulators("P11", 2026)[1].deductible_fen == 30000


def test_a_bill_moved_by_another_process_is_decided_on_its_row(service: MedicalService) -> None:
    """The writer keeps the bills it wrote and decides their next move on them; a bill another
    connection moved meanwhile is decided on its row as it is."""
    store = _store(service)
    opened, approved = _submit(service, 2)
    service.approve_bill(approved.bill_id, "H001", CARD, NOW)
    assert isinstance(store.engine, Engine) and store.engine.url.database is not None
    database = store.engine.url.database
    with sqlite3.connect(database) as other:  # the CLI, say: one approved, one reversed
        for record, state in ((opened, "approved"), (approved, "reversed")):
            other.execute(
                "UPDATE medical_bills SET state = ?, updated_at_us = updated_at_us + 1"
                " WHERE bill_id = ?",
                (state, record.bill_id),
            )
    again = service.approve_bill(opened.bill_id, "H001", CARD, NOW)
    assert again.state is BillState.APPROVED and again.updated_at_us == opened.updated_at_us + 1
    with pytest.raises(BillStateError):
        service.complete_bill(approved.bill_id, NOW)
    committed, _ = store.accumulators(HOLDERS[0].person_id, DAY.year)
    assert committed.eligible_fen == 0  # nothing completed
    assert service.complete_bill(opened.bill_id, NOW)[1]  # its own writes: kept and current

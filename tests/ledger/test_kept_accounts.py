"""The SQLite writer keeps the accounts' rows between batches (`SqliteStore.load_accounts`): a
rollback forgets them (a batch's decisions changed those very objects), and so does a commit by
another connection on the file (``PRAGMA data_version``). Each test below loses or doubles money
if the kept rows outlive what they mirror."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from ledger.core import Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from ledger.writer import jobs as j
from ledger.writer.store import SqliteStore

ACCOUNTS = [new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1"), new_account(K.PERSONAL_FUND, "c1")]


def _transfer(n: int, fen: int) -> Transfer:
    return Transfer(f"t{n}", "contrib:u1", "pf:c1", fen, code=1)


def _credits(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT credits_posted FROM accounts WHERE id = 'pf:c1'").fetchone()
    return int(row[0])


def test_a_commit_by_another_writer_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "l.db"

    async def go() -> None:
        first, second = SqliteLedger.open(path), SqliteLedger.open(path)
        try:
            await first.open_accounts(ACCOUNTS)
            assert await first.post([_transfer(1, 100)]) == [TransferResult.CREATED]
            assert await second.post([_transfer(2, 200)]) == [TransferResult.CREATED]
            assert await first.post([_transfer(3, 300)]) == [TransferResult.CREATED]
            balance = (await first.balances(["pf:c1"]))["pf:c1"]
            assert balance.credits_posted_fen == 600
        finally:
            await first.close()
            await second.close()

    asyncio.run(go())
    assert _credits(path) == 600


def _store(path: Path) -> SqliteStore:
    upgrade_sqlite(path)
    store = SqliteStore(path)
    store.connect()
    writer = store.writer(deliver=lambda batch: None)
    writer.run_batch([j.Job(j.OpenAccounts(ACCOUNTS))])
    writer.run_batch([j.Job(j.Post([_transfer(0, 1)]))])  # the accounts kept from here on
    return store


def test_a_batch_run_again_after_a_tainted_call_posts_once(tmp_path: Path) -> None:
    """The post is decided (the kept rows changed), then its call writes and raises: the batch
    rolls back and runs again with savepoints, deciding the post a second time."""
    path = tmp_path / "l.db"
    store = _store(path)

    def write_then_raise(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO review_items (key, reason, reference, amount_fen, detail,"
            " created_at_us) VALUES ('k', 'r', '', 0, '', 0)"
        )
        raise ValueError("after writing")

    op = j.PostThenCall([_transfer(1, 500)], [], None, write_then_raise, lambda _: ([], None))
    job = j.Job(op)
    store.writer(deliver=lambda batch: None).run_batch([job])
    assert job.error is None
    assert job.value.posted.results == [TransferResult.CREATED]
    assert isinstance(job.value.called, ValueError)
    store.disconnect()
    assert _credits(path) == 501


def test_a_batch_whose_commit_failed_posts_once(tmp_path: Path) -> None:
    """The commit fails after the batch decided its posts: the writer rolls back and runs each
    job again on its own."""
    path = tmp_path / "l.db"
    store = _store(path)
    commit, failures = store.commit, [RuntimeError("disk full")]

    def failing_commit() -> None:
        if failures:
            raise failures.pop()
        commit()

    store.commit = failing_commit  # type: ignore[method-assign]
    jobs = [j.Job(j.Post([_transfer(1, 500)])), j.Job(j.Post([_transfer(2, 20)]))]
    store.writer(deliver=lambda batch: None).run_batch(jobs)
    assert [job.value for job in jobs] == [[TransferResult.CREATED]] * 2
    store.disconnect()
    assert _credits(path) == 521

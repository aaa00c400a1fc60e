"""The group-commit writer on its own: callers learn results only after the commit, concurrent
callers share commits, and a failing job fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ledger.writer.engine import Writer
from ledger.writer.jobs import History, Job


class FakeDatabase:
    """Records what the writer does; a job for the account "boom" makes its batch fail (the
    jobs are `History` operations carrying their number as their limit)."""

    def __init__(self) -> None:
        self.pending: list[Job] = []
        self.committed: list[object] = []
        self.commits = 0
        self.rollbacks = 0

    def execute(self, batch: Sequence[Job]) -> None:
        for job in batch:
            assert isinstance(job.op, History)
            if job.op.account == "boom":
                raise ValueError("boom")
            job.value = ("done", job.op.limit, self.commits)
        self.pending = list(batch)

    def commit(self) -> None:
        self.commits += 1
        self.committed += [job.op.limit for job in self.pending]  # type: ignore[union-attr]

    def rollback(self) -> None:
        self.rollbacks += 1
        self.pending = []

    def writer(self) -> Writer:
        def nothing() -> None:
            return None

        return Writer("test-writer", nothing, self.execute, self.commit, self.rollback, nothing)


def _op(number: int, *, boom: bool = False) -> History:
    return History("boom" if boom else "ok", number)


def test_results_only_after_commit_and_batches_shared() -> None:
    database = FakeDatabase()

    async def go() -> None:
        writer = database.writer()
        writer.start()

        async def caller(index: int) -> None:
            value = await writer.submit(_op(index))
            assert index in database.committed  # durable before the caller hears of it
            assert value[:2] == ("done", index)

        await asyncio.gather(*(caller(i) for i in range(200)))
        await writer.stop()
        assert writer.stats.jobs == 200
        assert writer.stats.batches < 200  # concurrent callers shared commits

    asyncio.run(go())
    assert sorted(database.committed) == list(range(200))  # type: ignore[type-var]


def test_a_failing_job_fails_alone() -> None:
    database = FakeDatabase()

    async def go() -> None:
        writer = database.writer()
        writer.start()
        results = await asyncio.gather(
            *(writer.submit(_op(i, boom=i == 3)) for i in range(10)),
            return_exceptions=True,
        )
        await writer.stop()
        assert isinstance(results[3], ValueError)
        assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 3)

    asyncio.run(go())
    assert sorted(database.committed) == [i for i in range(10) if i != 3]  # type: ignore[type-var]
    assert database.rollbacks >= 1


def test_submit_after_stop_is_refused() -> None:
    database = FakeDatabase()

    async def go() -> None:
        writer = database.writer()
        writer.start()
        await writer.stop()
        try:
            await writer.submit(_op(1))
        except RuntimeError as err:
            assert "closed" in str(err)
        else:
            raise AssertionError("submit after stop was accepted")

    asyncio.run(go())


def test_threads_run_jobs_beside_the_event_loops_callers() -> None:
    database = FakeDatabase()

    async def go() -> None:
        writer = database.writer()
        writer.start()

        def in_thread(index: int) -> object:
            value = writer.run(_op(index, boom=index == 7))
            assert index in database.committed  # durable before the thread hears of it
            return value

        threads = [asyncio.to_thread(in_thread, i) for i in range(10)]
        tasks = [writer.submit(_op(i)) for i in range(10, 60)]
        results = await asyncio.gather(*threads, *tasks, return_exceptions=True)
        assert isinstance(results[7], ValueError)
        assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 7)
        await writer.stop()
        try:
            writer.run(_op(99))
        except RuntimeError as err:
            assert "closed" in str(err)
        else:
            raise AssertionError("run after stop was accepted")

    asyncio.run(go())
    assert sorted(database.committed) == [i for i in range(60) if i != 7]  # type: ignore[type-var]

"""Group commit on one writer thread: concurrent callers' jobs are gathered into one database
transaction and one durable commit; each caller's answer is delivered only after that commit.
The SQLite ledger's one engine (PostgreSQL's group commit is `ledger.pg_ledger`'s own task).

The gathering is natural batching with a bounded size: while one commit is being made durable the
next callers queue up, and the writer takes everything waiting (at most `batch_max` jobs) as the
next batch. An optional `window_s` lets it wait a little for more when the last batch was shared.

Callers on the event loop `submit`; synchronous callers on other threads `run` (the medical
store's writes on SQLite share the ledger's writer this way: one writer per database file).
The writer process's child runs the same batches through `Writer.run_batch` on its one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ledger.core import Health, LedgerUnavailable
from ledger.writer.jobs import Call, Job, Operation, Stats

BATCH_MAX = 1024
WINDOW_S = 0.0
CLOSED = "ledger is closed"


#: Executes a batch inside one transaction, setting each job's value; raises to roll back.
Executor = Callable[[Sequence[Job]], None]
#: Hands a committed batch's values and errors to their callers.
Deliver = Callable[[Sequence[Job]], None]


class Writer:
    """The writer thread. `begin`, `execute`, `commit` and `rollback` run on it only."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], None],
        execute: Executor,
        commit: Callable[[], None],
        rollback: Callable[[], None],
        disconnect: Callable[[], None],
        *,
        batch_max: int = BATCH_MAX,
        window_s: float = WINDOW_S,
        deliver: Deliver | None = None,
    ) -> None:
        self._deliver = deliver or deliver_to_callers
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._connect, self._execute = connect, execute
        self._commit, self._rollback, self._disconnect = commit, rollback, disconnect
        self._batch_max, self._window_s = batch_max, window_s
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
        self._closing = threading.Lock()  # a job is queued before the stop mark or refused
        self.stats = Stats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    async def submit(self, op: Operation) -> Any:
        """Queue a job and wait for its answer, available only after its batch committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.put(Job(op, loop, future))
        return await future

    def run(self, op: Operation) -> Any:
        """`submit` for a synchronous caller on another thread: blocks until its batch
        committed, then returns its answer or raises its error."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("the writer thread cannot wait for its own batch")
        job = Job(op, done=threading.Event())
        self.put(job)
        return job.wait()

    @property
    def waiting(self) -> int:
        """Jobs queued behind the batch being written (for tests and metrics)."""
        return self._queue.qsize()

    def health(self) -> Health:
        return Health.WRITER_ENDED if self._closed else Health.OK

    def put(self, job: Job) -> None:
        """Queue ``job``; its batch's `Deliver` hands it back (`submit` and `run` wait for it)."""
        with self._closing:
            if self._closed or not self._thread.is_alive():
                raise LedgerUnavailable(CLOSED)
            self._queue.put(job)

    def _stop_mark(self) -> bool:
        with self._closing:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(None)
            return True

    async def stop(self) -> None:
        """Write what was queued, then end the thread (once)."""
        if self._stop_mark():
            await asyncio.to_thread(self._thread.join)

    def close(self) -> None:
        """`stop` for a synchronous caller (not the writer's own thread)."""
        if self._stop_mark() and self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            self._connect()
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            shared = False
            while True:
                batch, stop = self._gather(shared)
                if batch:
                    self.run_batch(batch)
                    shared = len(batch) > 1
                if stop:
                    return
        finally:
            self._disconnect()
            self._refuse_waiting()

    def _refuse_waiting(self) -> None:
        """The thread is ending: nothing queued will run, so nobody may wait for it."""
        with self._closing:
            self._closed = True
        left: list[Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.error = LedgerUnavailable(CLOSED)
                left.append(job)
        self._deliver(left)

    def _gather(self, shared: bool) -> tuple[list[Job], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self._window_s if shared else 0.0
        while len(batch) < self._batch_max:
            try:
                remaining = deadline - time.monotonic()
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def run_batch(self, batch: list[Job]) -> None:
        """One batch in one transaction and one commit, then delivered; a batch that fails
        runs again job by job, so that only the culprit fails. Called by the writer's own
        thread (or by the one thread of the writer process's child, which gathers).
        Unsynced calls (`Call(..., synced=False)`) gathered with other work commit first, on
        their own: they do not wait for the others' fsync (a reply held for a later request's
        disk write)."""
        unsynced = [job for job in batch if _unsynced(job)]
        if unsynced and len(unsynced) < len(batch):
            self._run_batch(unsynced)
            batch = [job for job in batch if not _unsynced(job)]
        self._run_batch(batch)

    def _run_batch(self, batch: list[Job]) -> None:
        try:
            self._execute(batch)
            self._commit()
        except Exception as exc:
            with contextlib.suppress(Exception):  # a broken connection fails the batch, not us
                self._rollback()
            self.stats.commits_failed += 1
            if len(batch) > 1:  # find the culprit: every job again on its own
                for job in batch:
                    job.value, job.error = None, None
                    self._run_batch([job])
                return
            batch[0].error = exc
        self.stats.batches += 1
        self.stats.jobs += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        self._deliver(batch)


def _unsynced(job: Job) -> bool:
    """A write that may wait for the next commit to reach the disk (the reply cache's)."""
    return isinstance(job.op, Call) and not job.op.synced


def deliver_to_callers(batch: Sequence[Job]) -> None:
    """Wake each job's caller: a synchronous one's event, an event loop's future (one
    ``call_soon_threadsafe`` per loop and batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
    for job in batch:
        if job.loop is None:
            if job.done is not None:
                job.done.set()
            continue
        by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody waits
            loop.call_soon_threadsafe(resolve, jobs)


def resolve(jobs: Sequence[Job]) -> None:
    """Settle the jobs' futures (on their loop)."""
    for job in jobs:
        if job.future is None or job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.value)

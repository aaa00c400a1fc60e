"""Group commit on one writer thread: concurrent callers' jobs are gathered into one database
transaction and one durable commit; each caller's future is resolved only after that commit.

The gathering is natural batching with a bounded size: while one commit is being made durable the
next callers queue up, and the writer takes everything waiting (at most `batch_max` jobs) as the
next batch. An optional `window_s` lets it wait a little for more when the last batch was shared.

Callers on the event loop `submit`; synchronous callers on other threads `run` (the medical
store's writes on SQLite share the ledger's writer this way: one writer per database file).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

BATCH_MAX = 1024
WINDOW_S = 0.0
#: A job whose only argument is a function of the writer's connection, run in the batch's
#: transaction (the medical store's writes on the ledger's writer): see `run_calls`.
CALL = "call"
#: A `CALL` whose value names transfers to post in the same transaction: args (the call, a
#: function of its value giving (transfers, opening)); the job's value is (the call's value,
#: the transfers' results). See `ledger.sqlite_ledger.SqliteStore.execute`.
CALL_POST = "call_post"
#: A ``post_and_record`` followed, when all its transfers are in the ledger (posted now or
#: before), by a `CALL_POST` in the same transaction: args (transfers, records, opening, call,
#: postings); the job's value is ((results, balances before), the call's outcome: None when not
#: run, else (value, its postings' results) or the exception it raised).
POST_CALL_POST = "post_call_post"
#: A `CALL` whose write may wait for the next commit to reach the disk: a batch made only of
#: these commits without its own fsync (durable against the process's crash, not the
#: machine's; the next batch's fsync covers it). The retransmission cache's replies on SQLite.
CALL_UNSYNCED = "call_unsynced"


@dataclass(slots=True)
class Job:
    """One caller's request: `kind` names the operation, `args` its inputs."""

    kind: str
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop | None  # None: a synchronous caller waiting on `done`
    future: asyncio.Future[Any] | None
    value: Any = None
    error: BaseException | None = None
    done: threading.Event | None = None
    ticket: int = 0  # a job run for another process: its number there (`writer_process`)

    def wait(self) -> Any:
        """A synchronous caller's wait: its value once delivered, or its error raised."""
        assert self.done is not None
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(slots=True)
class Stats:
    batches: int = 0
    jobs: int = 0
    commits_failed: int = 0
    batch_sizes: list[int] = field(default_factory=list)


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

    async def submit(self, kind: str, *args: Any) -> Any:
        """Queue a job and wait for its result, available only after its batch committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.put(Job(kind, args, loop, future))
        return await future

    def run(self, kind: str, *args: Any) -> Any:
        """`submit` for a synchronous caller on another thread: blocks until its batch
        committed, then returns its result or raises its error."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("the writer thread cannot wait for its own batch")
        job = Job(kind, args, None, None, done=threading.Event())
        self.put(job)
        return job.wait()

    @property
    def waiting(self) -> int:
        """Jobs queued behind the batch being written (for tests and metrics)."""
        return self._queue.qsize()

    def put(self, job: Job) -> None:
        """Queue ``job``; its batch's `Deliver` hands it back (`submit` and `run` wait for it)."""
        with self._closing:
            if self._closed or not self._thread.is_alive():
                raise RuntimeError("ledger is closed")
            self._queue.put(job)

    async def stop(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

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
                job.error = RuntimeError("ledger is closed")
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
        thread (or by the one thread of `ledger.writer_process`'s child, which gathers).
        `CALL_UNSYNCED` jobs gathered with other work commit first, on their own: they do not
        wait for the others' fsync (a reply held for a later request's disk write)."""
        unsynced = [job for job in batch if job.kind == CALL_UNSYNCED]
        if unsynced and len(unsynced) < len(batch):
            self._run_batch(unsynced)
            batch = [job for job in batch if job.kind != CALL_UNSYNCED]
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
        self._deliver(batch)


class Tainted(Exception):
    """A call raised after writing, outside a savepoint: its batch cannot commit as it is."""


def run_calls(db: Any, jobs: Sequence[Job], *, savepoints: bool = False) -> None:
    """Run `CALL` (and `CALL_POST`) jobs inside the open transaction on `db` (a DB-API
    connection in autocommit mode, e.g. ``sqlite3``): a job that raises gets its own exception;
    the other jobs of the batch commit. A call nearly always raises before writing (a refusal),
    so nothing needs undoing and no savepoint is paid for (two statements per call, each a GIL
    handoff on the writer); one that raises after writing (or took the transaction with it)
    raises `Tainted`, and the batch is run again with ``savepoints``: each call in a savepoint
    of its own, rolled back to where it started when it raises. A call whose failure took the
    whole transaction with it (the savepoint is gone) fails the batch, which the writer then
    runs again job by job."""
    for job in jobs:
        if savepoints:
            db.execute("SAVEPOINT job")
        before = db.total_changes
        try:
            job.value = job.args[0](db)
        except Exception as error:
            if not savepoints:
                if db.total_changes != before or not db.in_transaction:
                    raise Tainted from error
            else:
                try:
                    db.execute("ROLLBACK TO job")
                except Exception:
                    raise error from None
            job.value, job.error = None, error
        if savepoints:
            db.execute("RELEASE job")


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
            loop.call_soon_threadsafe(_resolve, jobs)


def _resolve(jobs: Sequence[Job]) -> None:
    for job in jobs:
        if job.future is None or job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.value)

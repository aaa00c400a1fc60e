"""Group commit for synchronous callers (threads): concurrent callers' writes are gathered into
one SQLite write transaction and one durable COMMIT, and each caller gets its own result — or
its own exception — only after that commit.

Leader/follower, with no thread of its own: a caller that finds nobody writing becomes the
leader; it takes everything queued (at most `batch_max` operations, its own first), runs them in
one ``BEGIN IMMEDIATE`` transaction on the writer's own ``sqlite3`` connection, commits, hands
the lead to the oldest caller still waiting and wakes its batch. While a leader commits, the
next callers queue up: the batch size follows the load.

An operation that raises before writing anything (a refusal: the usual case) fails alone and the
rest of its batch commits. One that raises after writing taints the batch: it is rolled back and
each of its operations runs again in a transaction of its own (operations are re-runnable: they
read what they decide on inside the transaction). A failed BEGIN or COMMIT fails the whole batch
(nothing of it was written).

>>> import sqlite3
>>> writer = GroupWriter(lambda: sqlite3.connect(":memory:", isolation_level=None,
...                                              check_same_thread=False))
>>> writer.run(lambda db: db.execute("CREATE TABLE t (x)").rowcount)
-1
>>> writer.run(lambda db: db.execute("INSERT INTO t VALUES (1)").rowcount)
1
>>> writer.stats.batches, writer.stats.ops
(2, 2)
>>> writer.close()
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ledger.group_commit import CALL, Writer
from ledger.writer_process import ProcessWriter

T = TypeVar("T")
BATCH_MAX = 256

#: One caller's write: runs on the leader's thread inside the batch's transaction.
Operation = Callable[[sqlite3.Connection], T]


@dataclass(slots=True, eq=False)
class _Pending:
    run: Callable[[sqlite3.Connection], Any]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next batch rather than with a result
    value: Any = None
    error: BaseException | None = None


class _Tainted(Exception):
    """An operation raised after writing: its batch cannot commit as it is."""


@dataclass(slots=True)
class Stats:
    batches: int = 0
    ops: int = 0
    failed_batches: int = 0
    largest: int = 0


class GroupWriter:
    """Serialises writes through one connection, batching concurrent ones into one commit."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, batch_max: int = BATCH_MAX
    ) -> None:
        self._connect = connect
        self._batch_max = batch_max
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        self._closed = False
        self._db: sqlite3.Connection | None = None
        self.stats = Stats()

    @property
    def waiting(self) -> int:
        """Operations queued behind the batch being written (for tests and metrics)."""
        with self._lock:
            return len(self._queue)

    def run(self, operation: Operation[T]) -> T:
        """Run `operation` in the next batch; its result (or exception) once that batch is
        durable."""
        pending = _Pending(operation)
        with self._lock:
            if self._closed:
                raise RuntimeError("the medical store is closed")
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        if not lead:
            pending.done.wait()
            lead = pending.lead
        if lead:
            self._lead()
        if pending.error is not None:
            raise pending.error
        value: T = pending.value
        return value

    async def submit(self, operation: Operation[T]) -> T:
        """`run` for a caller on the event loop: it waits in a thread (the batch's leader may be
        that thread)."""
        return await asyncio.to_thread(self.run, operation)

    def close(self) -> None:
        """Refuse new writes and close the connection once nobody is writing."""
        with self._lock:
            self._closed = True
            idle = not self._leading
        if idle and self._db is not None:
            self._db.close()
            self._db = None

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self._batch_max]
            del self._queue[: self._batch_max]
        try:
            self._write(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
                closing = self._closed and successor is None
            if successor is not None:
                successor.lead = True
                successor.done.set()
            elif closing and self._db is not None:
                self._db.close()
                self._db = None
            for pending in batch:
                pending.done.set()

    def _write(self, batch: list[_Pending]) -> None:
        try:
            if self._db is None:
                self._db = self._connect()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            for pending in batch:
                before = db.total_changes
                try:
                    pending.value = pending.run(db)
                except Exception as error:
                    if db.total_changes != before or not db.in_transaction:
                        raise _Tainted from error  # it wrote before failing
                    pending.error = error  # it failed before writing: the others go on
            db.execute("COMMIT")
        except BaseException as error:  # nothing of the batch is durable
            if self._db is not None and self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:  # a broken connection: open a new one next time
                    self._db.close()
                    self._db = None
            self.stats.failed_batches += 1
            if isinstance(error, _Tainted) and len(batch) > 1:
                for pending in batch:  # each again in a transaction of its own
                    pending.value, pending.error = None, None
                    self._write([pending])
                return
            cause = error.__cause__ if isinstance(error, _Tainted) else error
            for pending in batch:
                pending.value, pending.error = None, cause
            if not isinstance(error, Exception):
                raise
            return
        self.stats.batches += 1
        self.stats.ops += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))


class Writes(Protocol):
    """Where the medical store's writes go: its own `GroupWriter` or the ledger's writer."""

    def run(self, operation: Operation[T]) -> T: ...

    async def submit(self, operation: Operation[T]) -> T: ...

    def close(self) -> None: ...


class LedgerWrites:
    """The medical store's writes as jobs on the SQLite ledger's writer thread (one writer, one
    connection, one transaction and one durable commit per group for both): each operation runs
    in a savepoint of the ledger's batch, fails alone, and returns once that batch committed.
    `run` is called from threads other than the writer's; `submit` from the event loop, which
    queues the job and awaits it like the ledger's own (no thread hop)."""

    def __init__(self, writer: Writer | ProcessWriter) -> None:
        self._writer = writer
        self._closed = False

    def run(self, operation: Operation[T]) -> T:
        if self._closed:
            raise RuntimeError("the medical store is closed")
        value: T = self._writer.run(CALL, operation)
        return value

    async def submit(self, operation: Operation[T]) -> T:
        if self._closed:
            raise RuntimeError("the medical store is closed")
        value: T = await self._writer.submit(CALL, operation)
        return value

    def close(self) -> None:
        """Refuse new writes; the writer is the ledger's and closes with it."""
        self._closed = True

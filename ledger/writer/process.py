"""The SQLite ledger's writer in a process of its own — the parent's side, supervised.

On one process the writer thread's Python (gathering, deciding postings, the medical store's
checks) and every return from a ``sqlite3`` call take the interpreter lock the event loop needs;
on a 2-core machine the two then take turns on what is in effect one core. Here the writer is the
same engine over the same `SqliteStore`, run by a child process (`ledger.writer.child`); the
parent's `ProcessWriter` has the thread's interface (`submit`, `run`, `stop`, `waiting`,
`stats`, `health`) and passes each job over a socket pair, pickled (`ledger.writer.wire`): the
operation goes, its answer or error comes back once its batch committed.

Supervision. When the child dies (killed, crashed), its end of the socket closes: every job
waiting for it fails at once with `LedgerUnavailable`, the child is reaped, and a new child is
started and attached after a bounded backoff (`Restarts`); meanwhile `health` is
`Health.RESTARTING` and every call fails at once with `LedgerUnavailable`. After
``len(Restarts.delays_s)`` restarts in a row, each child dying within `Restarts.stable_s`, or a
start that fails as often, the writer gives up: `Health.WRITER_ENDED`.

What a job in flight at the crash means: the child commits a batch before it answers, so a job
whose answer was lost may or may not be durable. Nothing committed is lost (SQLite's WAL with
synchronous=FULL), and nothing is doubled when the caller retries, since every operation is
idempotent: transfers by their ids, bills by their id and digest, transitions (a bill already in
the target state stays), offline purchases, reviews and reversals by their keys.

>>> import asyncio, tempfile, pathlib
>>> from ledger.migrate import upgrade_sqlite
>>> from ledger.writer.jobs import AllBalances
>>> path = pathlib.Path(tempfile.mkdtemp()) / "l.db"
>>> upgrade_sqlite(path)
>>> async def demo():
...     writer = ProcessWriter(path, crossing="ledger.crossing:sqlite_writer")
...     writer.start()
...     try:
...         return await writer.submit(AllBalances())
...     finally:
...         await writer.stop()
>>> asyncio.run(demo())
[]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ledger.core import Health, LedgerUnavailable
from ledger.writer.engine import BATCH_MAX, CLOSED, deliver_to_callers
from ledger.writer.jobs import Job, Operation, Stats
from ledger.writer.wire import Received, Wire, load_crossing

log = logging.getLogger("medswitch.ledger")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_HEADER = struct.Struct("!i")  # a message's length, as multiprocessing.connection frames it
_STOP = b""  # the parent's last message: the child finishes what it has and ends


@dataclass(frozen=True, slots=True)
class Restarts:
    """How a dead child is replaced: the n-th restart in a row waits ``delays_s[n]`` first; a
    child that lived ``stable_s`` resets the count; the count is bounded by the delays."""

    delays_s: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
    stable_s: float = 60.0


@dataclass(slots=True, eq=False)
class _Child:
    """One child process and its channel (a new one per restart)."""

    process: subprocess.Popen[bytes]
    received: Received
    started_s: float
    transport: asyncio.Transport | None = None
    ended: asyncio.Future[None] | None = None
    buffer: bytearray = field(default_factory=bytearray)


def spawn(path: str, batch_max: int, crossing: str) -> tuple[Connection, subprocess.Popen[bytes]]:
    """Start a child (``python -m ledger.writer.child``: a fresh interpreter, nothing
    inherited from this process's threads or main module); back once its connection is open,
    or raise what opening it raised."""
    ours, theirs = socket.socketpair()
    command = [sys.executable, "-m", "ledger.writer.child", str(theirs.fileno())]
    command += [path, str(batch_max), crossing]
    quiet = subprocess.DEVNULL  # the daemon's stdout is its operator's
    process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=quiet, stdout=quiet)
    theirs.close()
    conn = Connection(ours.detach())
    if not conn.poll(START_TIMEOUT_S):
        process.kill()
        process.wait()
        conn.close()
        raise LedgerUnavailable("the ledger's writer process did not start")
    try:
        started = pickle.loads(conn.recv_bytes())  # its wire's fingerprint, or what it raised
    except EOFError:
        process.wait()
        conn.close()
        raise LedgerUnavailable("the ledger's writer process ended while starting") from None
    if isinstance(started, BaseException):
        conn.close()
        process.wait(START_TIMEOUT_S)
        raise started
    if started != Wire(load_crossing(crossing)).fingerprint():  # not the daemon's code
        conn.close()
        reap(process)  # its end closed: it writes nothing and ends
        raise LedgerUnavailable("the ledger's writer process numbers another wire's objects")
    return conn, process


def reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a child that is ending; kill it if it does not (no zombie is left)."""
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ProcessWriter:
    """The engine's interface, the writer itself in a child process (module docstring).

    Jobs and answers travel on the event loop that `attach` names (the first `submit`
    attaches its own): a transport's write keeps the interpreter lock, where a thread's
    blocking send would hand it to another thread for each job, and answers are handed to
    their callers where they wait, with no thread in between. `run` (a synchronous caller on
    another thread) goes through that loop too."""

    def __init__(
        self,
        path: Path | str,
        *,
        crossing: str,
        batch_max: int = BATCH_MAX,
        restarts: Restarts | None = None,
    ) -> None:
        """``crossing``: ``module:function`` giving the `ledger.writer.wire.Crossing` of what
        the jobs carry (both processes call it)."""
        self._path, self._batch_max, self._crossing = str(path), batch_max, crossing
        self._restarts = restarts or Restarts()
        self._wire = Wire(load_crossing(crossing))
        self._pending: dict[int, Job] = {}  # touched on the loop only
        self._tickets = itertools.count(1)
        self._health = Health.OK
        self._stopping = False
        self._conn: Connection | None = None  # started, not yet attached
        self._process: subprocess.Popen[bytes] | None = None  # the current child
        self._child: _Child | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._attaching: asyncio.Future[None] | None = None
        self._supervising: asyncio.Task[None] | None = None
        self._woken: asyncio.Event | None = None  # stop's call, waking a backoff
        self._outgoing: list[Job] = []  # this loop turn's jobs, sent at its end
        self.restarted = 0  # children started after one died
        self._in_a_row = 0  # restarts since a child last lived `Restarts.stable_s`
        self.stats = Stats()

    def start(self) -> None:
        """Start the child; back once its connection is open, or raise what opening it raised."""
        self._conn, self._process = spawn(self._path, self._batch_max, self._crossing)

    async def attach(self) -> None:
        """Carry jobs and answers on the running loop (once; `submit` does it when needed)."""
        if self._attaching is None:
            self._attaching = asyncio.ensure_future(self._attach())
        await asyncio.shield(self._attaching)

    async def _attach(self) -> None:
        conn, process = self._conn, self._process
        if conn is None or process is None:
            raise LedgerUnavailable(CLOSED)
        self._conn = None
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._woken = asyncio.Event()
        await self._connect(conn, process)

    async def _connect(self, conn: Connection, process: subprocess.Popen[bytes]) -> _Child:
        """Make ``process`` the current child, its channel carried by the loop."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        child = _Child(process, Received(self._wire), time.monotonic(), ended=loop.create_future())
        self._child, self._process = child, process
        await loop.create_unix_connection(lambda: _Channel(self, child), sock=sock)
        return child

    async def submit(self, op: Operation) -> Any:
        """Queue a job and wait for its answer, available only after its batch committed;
        `LedgerUnavailable` at once while the child is down."""
        if self._loop is None:
            await self.attach()
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._send(Job(op, self._loop, future))
        return await future

    def run(self, op: Operation) -> Any:
        """`submit` for a synchronous caller on another thread than the loop's."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the ledger's writer process is not attached to an event loop")
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("the event loop cannot wait for its own writer's answer")
        job = Job(op, done=threading.Event())
        try:
            loop.call_soon_threadsafe(self._send_from_thread, job)
        except RuntimeError:  # the loop is closed
            raise LedgerUnavailable(CLOSED) from None
        return job.wait()

    @property
    def waiting(self) -> int:
        """Jobs sent and not yet answered (those being written included)."""
        return len(self._pending)

    def health(self) -> Health:
        return self._health

    def stopping(self) -> bool:
        """Whether `stop` was called (it may come while a restart waits)."""
        return self._stopping

    def _send_from_thread(self, job: Job) -> None:
        try:
            self._send(job)
        except BaseException as error:  # the caller waits on its event: tell it
            job.error = error
            deliver_to_callers([job])

    def _send(self, job: Job) -> None:
        child = self._child
        if self._health is not Health.OK or child is None or child.transport is None:
            raise LedgerUnavailable(f"{CLOSED}: its writer process is {self._health.value}")
        if child.transport.is_closing():
            raise LedgerUnavailable(f"{CLOSED}: its writer process ended")
        job.ticket = ticket = next(self._tickets)
        self._pending[ticket] = job
        outgoing = self._outgoing
        if not outgoing:  # the loop turn's jobs go in one message: one wake-up of the child
            assert self._loop is not None  # attached: it has a child
            self._loop.call_soon(self._flush)
        outgoing.append(job)

    def _flush(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        child = self._child
        if not jobs or child is None or child.transport is None or child.transport.is_closing():
            return
        try:
            message = self._wire.dumps([(j.ticket, j.op) for j in jobs])
        except Exception:  # one job's operation does not pickle: it fails alone
            message = self._wire.dumps([(j.ticket, j.op) for j in self._picklable(jobs)])
        child.transport.write(_HEADER.pack(len(message)) + message)

    def _picklable(self, jobs: list[Job]) -> list[Job]:
        """The jobs whose operations pickle; the others failed (a programming error: a write
        that is a closure, not an object), and forgotten."""
        fit = []
        for job in jobs:
            try:
                self._wire.dumps(job.op)
            except Exception as error:
                self._pending.pop(job.ticket, None)
                name = type(job.op).__name__
                job.error = RuntimeError(f"a {name} job cannot go to the writer process: {error!r}")
                deliver_to_callers([job])
            else:
                fit.append(job)
        return fit

    def _received(self, child: _Child, data: bytes) -> None:
        buffer = child.buffer
        buffer += data
        start, size = 0, len(buffer)
        while size - start >= 4:
            (length,) = _HEADER.unpack_from(buffer, start)
            if size - start - 4 < length:
                break
            self._answered(child.received.load(buffer[start + 4 : start + 4 + length]))
            start += 4 + length
        del buffer[:start]

    def _answered(self, answers: list[tuple[int, Any, BaseException | None]]) -> None:
        """A committed batch's answers, on the loop: futures resolved here, events set."""
        pending = self._pending
        for ticket, value, error in answers:
            job = pending.pop(ticket)
            future = job.future
            if future is not None:
                if future.done():
                    continue
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)
            else:
                job.value, job.error = value, error
                if job.done is not None:
                    job.done.set()
        self.stats.batches += 1
        self.stats.jobs += len(answers)
        self.stats.largest = max(self.stats.largest, len(answers))

    def _lost(self, child: _Child) -> None:
        """A child's end closed (it stopped, or died): nobody may wait for it any more; a
        child that died is replaced (`_supervise`)."""
        if child is not self._child:
            return
        left, self._pending, self._outgoing = list(self._pending.values()), {}, []
        if self._stopping:
            reason = CLOSED
        else:
            self._health = Health.RESTARTING
            reason = f"{CLOSED}: its writer process ended (restarting)"
            log.critical(
                "the ledger's writer process ended: %d jobs fail, the writer restarts",
                len(left),
            )
            self._supervising = asyncio.ensure_future(self._supervise(child))
        for job in left:
            job.error = LedgerUnavailable(reason)
        deliver_to_callers(left)
        if child.ended is not None and not child.ended.done():
            child.ended.set_result(None)

    async def _supervise(self, dead: _Child) -> None:
        """Reap the dead child, then start and attach another, waiting the backoff before
        each attempt; give up after as many attempts in a row as there are delays."""
        await asyncio.to_thread(reap, dead.process)
        lived_s = time.monotonic() - dead.started_s
        tries = 0 if lived_s >= self._restarts.stable_s else self._in_a_row
        while not self.stopping():
            if tries >= len(self._restarts.delays_s):
                self._health = Health.WRITER_ENDED
                log.critical(
                    "the ledger's writer process died %d times in a row: it stays down", tries
                )
                return
            assert self._woken is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._restarts.delays_s[tries])
            if self.stopping():
                return
            tries += 1
            try:
                conn, process = await asyncio.to_thread(
                    spawn, self._path, self._batch_max, self._crossing
                )
            except Exception as error:
                log.error("the ledger's writer process did not restart: %s", type(error).__name__)
                continue
            self.restarted += 1
            self._in_a_row = tries
            child = await self._connect(conn, process)
            if self.stopping() or child.ended is None or child.ended.done():
                return  # stop came while it started (stop ends it), or it died (supervised)
            self._health = Health.OK
            log.warning("the ledger's writer process restarted (attempt %d)", tries)
            return

    async def stop(self) -> None:
        """Write what was sent, then end the child (once; after it died, only reap it)."""
        if self._stopping:
            return
        self._stopping, self._health = True, Health.WRITER_ENDED
        if self._woken is not None:
            self._woken.set()
        if self._supervising is not None:
            await self._supervising
        child = self._child
        if child is not None and child.transport is not None:
            if not child.transport.is_closing():
                self._flush()
                child.transport.write(_HEADER.pack(0))  # the stop mark: an empty message
            assert child.ended is not None
            await child.ended  # the child answered everything and closed its end
            child.transport.close()
        elif self._conn is not None:  # never attached
            with contextlib.suppress(OSError):
                self._conn.send_bytes(_STOP)
            self._conn.close()
            self._conn = None
        if self._process is not None:
            await asyncio.to_thread(reap, self._process)


class _Channel(asyncio.Protocol):
    def __init__(self, writer: ProcessWriter, child: _Child) -> None:
        self._writer, self._child = writer, child

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._child.transport = transport  # type: ignore[assignment]  # uvloop's: no subclass

    def data_received(self, data: bytes) -> None:
        self._writer._received(self._child, data)

    def eof_received(self) -> bool:
        return False  # close: the child has answered all it will

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer._lost(self._child)

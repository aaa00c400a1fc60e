"""The SQLite ledger's writer in a process of its own: the daemon's event loop and the writer
no longer share one interpreter lock.

On one process the writer thread's Python (gathering, deciding postings, the medical store's
checks) and every return from a ``sqlite3`` call take the lock the event loop needs; on a
2-core machine the two then take turns on what is in effect one core. Here the writer is the
same `Writer` over the same `SqliteStore`, run by a child process; the parent's
`ProcessWriter` has `Writer`'s interface (`submit`, `run`, `stop`, `waiting`, `stats`) and
passes each job over a socket pair, pickled: the job's kind and arguments go, its value or
error comes back once its batch committed. So every job's arguments must pickle: the ledger's
records do, and the medical store's writes are objects (`ledger.medical.sql_writes`), not
closures.

The child is a fresh interpreter (``python -m ledger.writer_process``; not a fork: the
parent has threads), started by `start`, which returns once the child's connection is open or
raises what opening it raised. It gathers and writes on one thread, and answers each batch in
one message once its commit returned; what crosses is pickled as `ledger.writer_pickle` says.
If the child ends, every job waiting for it fails, later ones are refused as on a closed
ledger, and the daemon is no longer ready.

>>> import asyncio, tempfile, pathlib
>>> from ledger.migrate import upgrade_sqlite
>>> path = pathlib.Path(tempfile.mkdtemp()) / "l.db"
>>> upgrade_sqlite(path)
>>> async def demo():
...     writer = ProcessWriter(path)
...     writer.start()
...     try:
...         return await writer.submit("all_balances")
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
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ledger.group_commit import BATCH_MAX, Job, Stats, deliver_to_callers
from ledger.writer_pickle import Received, Sent, crossing, dumps

log = logging.getLogger("medswitch.ledger")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_STOP = b""  # the parent's last message: the child finishes what it has and ends
_HEADER = struct.Struct("!i")  # a message's length, as multiprocessing.connection frames it


class ProcessWriter:
    """`Writer`'s interface, the writer itself in a child process (module docstring).

    Jobs and answers travel on the event loop that `attach` names (the first `submit`
    attaches its own): a transport's write keeps the interpreter lock, where a thread's
    blocking send would hand it to another thread for each job, and answers are handed to
    their callers where they wait, with no thread in between. `run` (a synchronous caller on
    another thread) goes through that loop too."""

    def __init__(self, path: Path | str, *, batch_max: int = BATCH_MAX) -> None:
        self._path, self._batch_max = str(path), batch_max
        self._pending: dict[int, Job] = {}  # touched on the loop only
        self._tickets = itertools.count(1)
        self._closed = False
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._transport: asyncio.Transport | None = None
        self._attaching: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] | None = None
        self._buffer = bytearray()
        self._outgoing: list[Job] = []  # this loop turn's jobs, sent at its end
        self._shared = Received()
        self.stats = Stats()

    def start(self) -> None:
        """Start the child (``python -m ledger.writer_process``: a fresh interpreter, nothing
        inherited from this process's threads or main module); back once its connection is
        open, or raise what opening it raised."""
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "ledger.writer_process", str(theirs.fileno())]
        command += [self._path, str(self._batch_max)]
        quiet = subprocess.DEVNULL  # the daemon's stdout is its operator's
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=quiet, stdout=quiet)
        theirs.close()
        conn = Connection(ours.detach())
        if not conn.poll(START_TIMEOUT_S):
            process.kill()
            process.wait()
            raise RuntimeError("the ledger's writer process did not start")
        try:
            error = pickle.loads(conn.recv_bytes())
        except EOFError:
            process.wait()
            raise RuntimeError("the ledger's writer process ended while starting") from None
        if error is not None:
            process.wait(START_TIMEOUT_S)
            raise error
        self._conn, self._process = conn, process

    async def attach(self) -> None:
        """Carry jobs and answers on the running loop (once; `submit` does it when needed)."""
        if self._attaching is None:
            self._attaching = asyncio.ensure_future(self._attach())
        await asyncio.shield(self._attaching)

    async def _attach(self) -> None:
        if self._conn is None:
            raise RuntimeError("ledger is closed")
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=os.dup(self._conn.fileno()))
        self._conn.close()
        self._conn = None
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._ended = loop.create_future()
        await loop.create_unix_connection(lambda: _Channel(self), sock=sock)

    async def submit(self, kind: str, *args: Any) -> Any:
        """Queue a job and wait for its result, available only after its batch committed."""
        if self._transport is None:
            await self.attach()
        future: asyncio.Future[Any] = self._loop.create_future()  # type: ignore[union-attr]
        self._send(Job(kind, args, self._loop, future))
        return await future

    def run(self, kind: str, *args: Any) -> Any:
        """`submit` for a synchronous caller on another thread than the loop's."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the ledger's writer process is not attached to an event loop")
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("the event loop cannot wait for its own writer's answer")
        job = Job(kind, args, None, None, done=threading.Event())
        try:
            loop.call_soon_threadsafe(self._send_from_thread, job)
        except RuntimeError:  # the loop is closed
            raise RuntimeError("ledger is closed") from None
        return job.wait()

    @property
    def waiting(self) -> int:
        """Jobs sent and not yet answered (those being written included)."""
        return len(self._pending)

    @property
    def ended(self) -> bool:
        """Whether the child is gone (stopped, or died: the daemon is then not ready)."""
        return self._closed

    def _send_from_thread(self, job: Job) -> None:
        try:
            self._send(job)
        except BaseException as error:  # the caller waits on its event: tell it
            job.error = error
            deliver_to_callers([job])

    def _send(self, job: Job) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            raise RuntimeError("ledger is closed")
        job.ticket = ticket = next(self._tickets)
        self._pending[ticket] = job
        outgoing = self._outgoing
        if not outgoing:  # the loop turn's jobs go in one message: one wake-up of the child
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        outgoing.append(job)

    def _flush(self) -> None:
        jobs, self._outgoing = self._outgoing, []
        transport = self._transport
        if not jobs or transport is None or transport.is_closing():
            return
        try:
            message = dumps([(j.ticket, j.kind, j.args) for j in jobs])
        except Exception:  # one job's arguments do not pickle: it fails alone
            fit = _picklable(jobs, self._pending)
            message = dumps([(j.ticket, j.kind, j.args) for j in fit])
        transport.write(_HEADER.pack(len(message)) + message)

    def _received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start, size = 0, len(buffer)
        while size - start >= 4:
            (length,) = _HEADER.unpack_from(buffer, start)
            if size - start - 4 < length:
                break
            self._answered(self._shared.load(buffer[start + 4 : start + 4 + length]))
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

    def _lost(self) -> None:
        """The child's end closed (it stopped, or died): nobody may wait for it any more."""
        if not self._closed:
            log.critical(
                "the ledger's writer process ended: %d jobs fail, nothing more is written",
                len(self._pending),
            )
        self._closed = True
        left, self._pending = list(self._pending.values()), {}
        for job in left:
            job.error = RuntimeError("ledger is closed: its writer process ended")
        deliver_to_callers(left)
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    async def stop(self) -> None:
        """Write what was sent, then end the child (once; after it died, only reap it)."""
        if self._closed:
            if self._process is not None and self._process.poll() is None:
                await asyncio.to_thread(self._join)
            return
        self._closed = True
        if self._transport is not None:
            if not self._transport.is_closing():
                self._flush()
                self._transport.write(_HEADER.pack(0))  # the stop mark: an empty message
            assert self._ended is not None
            await self._ended  # the child answered everything and closed its end
            self._transport.close()
        elif self._conn is not None:  # never attached
            with contextlib.suppress(OSError):
                self._conn.send_bytes(_STOP)
            self._conn.close()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        assert self._process is not None
        try:
            self._process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class _Channel(asyncio.Protocol):
    def __init__(self, writer: ProcessWriter) -> None:
        self._writer = writer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._writer._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._writer._received(data)

    def eof_received(self) -> bool:
        return False  # close: the child has answered all it will

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer._lost()


def main(argv: Sequence[str]) -> None:
    """The child's entry: ``python -m ledger.writer_process FD PATH BATCH_MAX``."""
    fd, path, batch_max = argv
    # The daemon's signals are the daemon's: it stops the child once it drained its requests
    # (a terminal's Ctrl-C or systemd's SIGTERM reach the whole group); the child also ends
    # when the daemon's end of the socket closes, after writing what it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _child(Connection(int(fd)), path, int(batch_max))


def _child(conn: Connection, path: str, batch_max: int) -> None:
    """The writer process, one thread: it gathers what the parent sent (blocking for the
    first message, then whatever else has arrived, up to about ``batch_max`` jobs), runs it as
    `Writer` runs a batch on the ledger's `SqliteStore`, answers, and gathers again; the
    parent's stop mark or its end closing ends it, once what it sent is written."""
    from ledger.sqlite_ledger import SqliteStore  # imported here: the module imports this one

    store = SqliteStore(path)
    sent = Sent()

    def answer(batch: Sequence[Job]) -> None:
        answers = [(job.ticket, job.value, crossing(job.error)) for job in batch]
        try:
            message = sent.dump(answers)
        except Exception:  # a value that does not pickle fails its own job
            message = sent.dump([_answer(job) for job in batch])
        conn.send_bytes(message)

    writer = store.writer(deliver=answer)
    try:
        store.connect()
    except BaseException as error:  # reported to the parent's start()
        conn.send_bytes(pickle.dumps(crossing(error)))
        return
    conn.send_bytes(pickle.dumps(None))
    try:
        stop = False
        while not stop:
            batch, stop = _gather(conn, batch_max)
            if batch:
                writer.run_batch(batch)
    finally:
        store.disconnect()
        conn.close()


def _gather(conn: Connection, batch_max: int) -> tuple[list[Job], bool]:
    """The jobs the parent sent: its first message waited for, then those already here."""
    jobs: list[Job] = []
    try:
        message = conn.recv_bytes()
        while True:
            if message == _STOP:
                return jobs, True
            for ticket, kind, args in pickle.loads(message):
                jobs.append(Job(kind, args, None, None, ticket=ticket))
            if len(jobs) >= batch_max or not conn.poll(0):
                return jobs, False
            message = conn.recv_bytes()
    except (EOFError, OSError):  # the parent is gone: write what it sent, then end
        return jobs, True


def _picklable(jobs: Sequence[Job], pending: dict[int, Job]) -> list[Job]:
    """The jobs whose arguments pickle; the others failed (a programming error: a write that
    is a closure, not an object), and forgotten."""
    fit = []
    for job in jobs:
        try:
            dumps(job.args)
        except Exception as error:
            pending.pop(job.ticket, None)
            detail = f"a {job.kind} job cannot go to the writer process: {error!r}"
            job.error = RuntimeError(detail)
            deliver_to_callers([job])
        else:
            fit.append(job)
    return fit


def _answer(job: Job) -> tuple[int, Any, BaseException | None]:
    """A job's answer as it can cross: a value that does not pickle is an error."""
    try:
        dumps(job.value)
    except Exception as error:  # the caller hears of it
        detail = f"the writer's answer does not cross to the daemon: {error!r}"
        return job.ticket, None, RuntimeError(detail)
    return job.ticket, job.value, crossing(job.error)


if __name__ == "__main__":  # run as the module it is: what it pickles names ledger.writer_process
    from ledger import writer_process

    writer_process.main(sys.argv[1:])

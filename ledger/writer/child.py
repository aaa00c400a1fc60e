"""The SQLite ledger's writer process: ``python -m ledger.writer.child FD PATH BATCH_MAX CROSSING``
(started by `ledger.writer.process.spawn`; not a fork: the parent has threads).

One thread: it gathers what the parent sent (blocking for the first message, then whatever else
has arrived, up to about ``batch_max`` jobs), runs it as the engine runs a batch on the ledger's
`SqliteStore`, answers the batch in one message once its commit returned, and gathers again. The
parent's stop mark, or its end closing, ends it once what it sent is written.
"""

from __future__ import annotations

import pickle
import select
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from ledger.writer.jobs import Job
from ledger.writer.store import SqliteStore
from ledger.writer.wire import Sent, Wire, load_crossing, portable

_STOP = b""  # the parent's last message


def main(argv: Sequence[str]) -> None:
    """The child's entry."""
    fd, path, batch_max, crossing = argv
    # The daemon's signals are the daemon's: it stops the child once it drained its requests
    # (a terminal's Ctrl-C or systemd's SIGTERM reach the whole group); the child also ends
    # when the daemon's end of the socket closes, after writing what it was sent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(int(fd)), path, int(batch_max), Wire(load_crossing(crossing)))


def serve(conn: Connection, path: str, batch_max: int, wire: Wire) -> None:
    """Open the store, say so (or send what opening it raised), then write until told to end."""
    store = SqliteStore(path)
    sent = Sent(wire)

    def answer(batch: Sequence[Job]) -> None:
        answers = [(job.ticket, job.value, portable(job.error)) for job in batch]
        try:
            message = sent.dump(answers)
        except Exception:  # a value that does not pickle fails its own job
            message = sent.dump([_answer(wire, job) for job in batch])
        conn.send_bytes(message)

    writer = store.writer(deliver=answer)
    try:
        store.connect()
    except BaseException as error:  # reported to the parent's start()
        conn.send_bytes(pickle.dumps(portable(error)))
        return
    conn.send_bytes(pickle.dumps(wire.fingerprint()))  # started: what its wire numbers
    ready = select.poll()
    ready.register(conn.fileno(), select.POLLIN)
    try:
        stop = False
        while not stop:
            batch, stop = _gather(conn, batch_max, wire, ready)
            if batch:
                writer.run_batch(batch)
    finally:
        store.disconnect()
        conn.close()


def _gather(
    conn: Connection, batch_max: int, wire: Wire, ready: select.poll
) -> tuple[list[Job], bool]:
    """The jobs the parent sent: its first message waited for, then those already here
    (``ready``: a poll object on ``conn``, made once: ``conn.poll`` builds a selector per call,
    4 µs per message)."""
    jobs: list[Job] = []
    try:
        message = conn.recv_bytes()
        while True:
            if message == _STOP:
                return jobs, True
            for ticket, op in wire.loads(message):
                jobs.append(Job(op, ticket=ticket))
            if len(jobs) >= batch_max or not ready.poll(0):
                return jobs, False
            message = conn.recv_bytes()
    except (EOFError, OSError):  # the parent is gone: write what it sent, then end
        return jobs, True


def _answer(wire: Wire, job: Job) -> tuple[int, Any, BaseException | None]:
    """A job's answer as it can cross: a value that does not pickle is an error."""
    try:
        wire.dumps(job.value)
    except Exception as error:  # the caller hears of it
        detail = f"the writer's answer does not cross to the daemon: {error!r}"
        return job.ticket, None, RuntimeError(detail)
    return job.ticket, job.value, portable(job.error)


if __name__ == "__main__":  # run as the module it is: what it pickles names ledger.writer.child
    from ledger.writer import child

    child.main(sys.argv[1:])

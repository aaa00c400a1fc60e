"""``medswitch serve --workers N``: N processes, each with its own event loop, binding the same
ports with SO_REUSEPORT (the kernel spreads connections over them), and a parent that forwards
SIGTERM/SIGINT to them and waits for every one to finish its graceful shutdown.

Only on PostgreSQL: every piece of session state a message needs (terminals' working keys and
batches, the retransmission cache, bills and accumulators, the ledger) is in the database, so
any worker serves any message. A worker that dies unexpectedly stops the others: the service
manager restarts the whole set (one exit code, no half-running daemon). A parent that dies —
even by SIGKILL, which it cannot forward — takes its workers with it: each asks the kernel for
SIGTERM when its parent ends (Linux's parent-death signal) and shuts down gracefully.

Metrics: a scrape of ``/metrics`` on the shared HTTP port is answered by whichever worker accepts
it; with ``http.worker_metrics_port`` set, worker ``i`` also serves its own ``/metrics`` on that
port + ``i`` — scrape each of those and sum.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger("medswitch.workers")
STOP_GRACE_S = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_workers(count: int, serve: Callable[[int], None]) -> int:
    """Fork ``count`` workers running ``serve(index)``; the exit code of the set."""
    supervisor = _Supervisor()
    signal.signal(signal.SIGTERM, supervisor.forward)  # before forking: none is lost
    signal.signal(signal.SIGINT, supervisor.forward)
    for index in range(count):
        if supervisor.stopping:
            break
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            os._exit(_worker(index, serve, parent))
        supervisor.children[pid] = index
    return supervisor.wait()


def _worker(index: int, serve: Callable[[int], None], parent: int) -> int:
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _end_with(parent)
        serve(index)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", index)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


class _Supervisor:
    def __init__(self) -> None:
        self.children: dict[int, int] = {}  # pid: worker index
        self.stopping = False
        self.deadline: float | None = None

    def forward(self, _signum: int = signal.SIGTERM, _frame: object = None) -> None:
        """Stop every worker (gracefully; killed after STOP_GRACE_S)."""
        self.stopping = True
        self.deadline = self.deadline or time.monotonic() + STOP_GRACE_S
        for pid in self.children:
            _signal(pid, signal.SIGTERM)

    def wait(self) -> int:
        code = 0
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    for child in self.children:  # graceful shutdown took too long
                        _signal(child, signal.SIGKILL)
                time.sleep(0.1)
                continue
            index = self.children.pop(pid)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code != 0 or not self.stopping:
                log.error("worker %d exited with %d; stopping the others", index, exit_code)
                code = code or (exit_code if exit_code > 0 else 1)
            if not self.stopping:
                self.forward()
        return code


def _end_with(parent: int) -> None:
    """SIGTERM to this worker when ``parent`` ends, however it ends (Linux: prctl's parent-death
    signal; elsewhere nothing, and a killed parent leaves its workers to the service manager).
    A parent already gone before the request took effect: the signal now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("no parent-death signal: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)

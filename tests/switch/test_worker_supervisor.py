"""The parent of `serve --workers N`: SIGTERM reaches every worker and the parent waits for all;
a worker that dies on its own stops the others and sets the exit code; a parent killed outright
(SIGKILL: nothing to forward) takes its workers with it, each shutting down gracefully."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from bench.bench_switch import alive

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from switch.workers import run_workers

    def serve(index):
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
        os.write(1, f"worker {index} {os.getpid()}\\n".encode())  # one write: whole lines
        if index == 0 and sys.argv[1] == "die":
            time.sleep(0.3)
            raise SystemExit(3)
        for _ in range(600):  # bounded: 60 s
            if stopped:
                os.write(1, f"worker {index} stopped\\n".encode())
                return
            time.sleep(0.1)
        raise SystemExit(9)

    sys.exit(run_workers(2, serve))
    """
)


def start(mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE, text=True)


def test_sigterm_reaches_every_worker_and_the_parent_waits() -> None:
    process = start("serve")
    try:
        assert process.stdout is not None
        started = [process.stdout.readline() for _ in range(2)]
        problem = "" if all(started) else process.communicate(timeout=30)[1]
        assert sorted(line.split()[1] for line in started if line) == ["0", "1"], problem
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        rest = process.stdout.read()
        assert "worker 0 stopped" in rest and "worker 1 stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_worker_that_dies_stops_the_others() -> None:
    process = start("die")
    try:
        assert process.wait(timeout=30) == 3
        assert process.stdout is not None
        assert "worker 1 stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_killed_parent_takes_its_workers_with_it() -> None:
    process = start("serve")
    try:
        assert process.stdout is not None
        started = [process.stdout.readline().split() for _ in range(2)]
        workers = [int(line[2]) for line in started if len(line) == 3]
        assert len(workers) == 2, started
        process.kill()  # SIGKILL: the parent forwards nothing
        process.wait(timeout=10)
        rest = process.stdout.read()  # the pipe closes when the last worker has ended
        assert "worker 0 stopped" in rest and "worker 1 stopped" in rest  # gracefully
        for pid in workers:
            for _ in range(100):  # bounded: 10 s for the kernel to reap the orphan
                if not alive(pid):
                    break
                time.sleep(0.1)
            assert not alive(pid), f"worker {pid} outlived its parent"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

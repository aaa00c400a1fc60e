"""`medswitch serve` as a process on a home (a demo deployment, ports 0): the ports it says it
listens on, stopped after use — SIGTERM, then SIGKILL — and its writer process reaped, whether
or not the test killed the daemon first."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_switch import alive, children, stop

SCRIPT = str(Path(sys.executable).parent / "medswitch")


@dataclass(frozen=True)
class Ports:
    terminal: int
    http: int
    before: tuple[str, ...] = ()  # what it said before it listened (key cards read)


@contextlib.contextmanager
def serving(
    home: Path, typed: str | None = None, settings: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], Ports]]:
    """`medswitch serve` on ``home`` (``typed`` on its standard input: key cards' PINs;
    ``settings``: more MEDSWITCH_* variables); stopped (SIGTERM, then SIGKILL) and its writer
    process reaped after use, whether or not the test stopped or killed it first."""
    env = {**os.environ, **(settings or {}), "MEDSWITCH_HOME": str(home)}
    process = subprocess.Popen(
        [SCRIPT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL if typed is None else subprocess.PIPE,
    )
    helpers: list[int] = []
    try:
        assert process.stdout is not None and process.stderr is not None
        if typed is not None and process.stdin is not None:
            process.stdin.write(typed)
            process.stdin.close()
        before: list[str] = []
        line = process.stdout.readline()
        while line and "medswitch serving" not in line and len(before) < 10:
            before.append(line.rstrip("\n"))
            line = process.stdout.readline()
        match = re.search(r"terminals on 127\.0\.0\.1:(\d+).*HTTP on [^:]+:(\d+)", line)
        assert match, line + (process.stderr.read() if process.poll() is not None else "")
        helpers = children(process.pid)  # its ledger writer
        yield process, Ports(int(match.group(1)), int(match.group(2)), tuple(before))
    finally:
        stop(process)
        _reap(helpers)


def wait_serving(process: subprocess.Popen[Any], out: Path, errors: Path, within_s: float) -> str:
    """What the process wrote to ``out`` once it says "medswitch serving"; AssertionError with
    the end of ``errors`` when it ends first or does not say it within ``within_s``."""
    deadline = time.monotonic() + within_s
    text = out.read_text()
    while "medswitch serving" not in text:
        assert process.poll() is None, f"it ended: {errors.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"it did not start: {errors.read_text()[-2000:]}"
        time.sleep(0.2)
        text = out.read_text()
    return text


def _reap(pids: list[int]) -> None:
    """The daemon's children end when its end of their socket closes; bounded wait, then kill."""
    deadline = time.monotonic() + 15
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

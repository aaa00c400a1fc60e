"""What the daemon's PostgreSQL backends are doing while a bench runs: ``pg_stat_activity``
sampled every few milliseconds from a thread of its own (pg_stat_statements needs a server
restart to load; this needs nothing), counted by backend (``application_name``: the daemon's
pool ``medswitch``, its ledger writers ``medswitch-ledger``), state and wait event, and the
statement's first words. ``active`` with no wait event is a backend on the CPU (or waiting for
one); ``idle in transaction`` is a transaction waiting for its client (a round trip, the
client's own CPU); ``Lock:transactionid``/``tuple`` is a row lock another transaction holds;
``IO:WALSync`` (or ``LWLock:WALWrite``) is the commit's fsync.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from pathlib import Path
from types import TracebackType

import asyncpg  # type: ignore[import-untyped]

_PIDS = "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE $1"
_TICKS_S = os.sysconf("SC_CLK_TCK")
_SAMPLE = (
    "SELECT application_name, state, coalesce(wait_event_type || ':' || wait_event, 'CPU'),"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), $2) FROM pg_stat_activity"
    " WHERE application_name LIKE $1 AND pid <> pg_backend_pid() AND state <> 'idle'"
)
SAMPLES_MAX = 100_000  # a bound on the loop whatever the bench does


class WaitSampler:
    """``with WaitSampler(dsn) as waits: ...`` then ``waits.report()``."""

    def __init__(self, dsn: str, *, interval_s: float = 0.005, query_chars: int = 40) -> None:
        self._dsn, self._interval_s, self._chars = dsn, interval_s, query_chars
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.samples = 0
        self.seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._cpu_at_start: dict[int, float] = {}
        self.cpu_s = 0.0  # CPU the daemon's backends used while sampled (same host only)
        self.cpu_s_by_app: dict[str, float] = {}  # of which, by application_name

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        connection = await asyncpg.connect(self._dsn)
        try:
            apps = {int(r[0]): r[1] for r in await connection.fetch(_PIDS, "medswitch%")}
            self._cpu_at_start = {pid: cpu_s(pid) for pid in apps}
            while not self._stop.is_set() and self.samples < SAMPLES_MAX:
                for app, state, wait, query in await connection.fetch(
                    _SAMPLE, "medswitch%", self._chars
                ):
                    what = wait if state == "active" else state
                    self.seen[(app, what, query)] += 1
                self.samples += 1
                await asyncio.sleep(self._interval_s)
            apps |= {int(r[0]): r[1] for r in await connection.fetch(_PIDS, "medswitch%")}
            for pid, app in apps.items():
                used = cpu_s(pid) - self._cpu_at_start.get(pid, 0.0)
                self.cpu_s_by_app[app] = self.cpu_s_by_app.get(app, 0.0) + used
            self.cpu_s = sum(self.cpu_s_by_app.values())
        finally:
            await connection.close()

    def report(self, lines: int = 14) -> str:
        """The most seen (backend, state or wait, statement), as busy backends per sample."""
        if not self.samples:
            return "  no samples"
        rows = [
            f"  {count / self.samples:5.2f}  {app:16s} {what:24s} {query}"
            for (app, what, query), count in self.seen.most_common(lines)
        ]
        busy = sum(self.seen.values()) / self.samples
        head = f"  {self.samples} samples, {busy:.2f} busy backends on average"
        return f"{head}, {self.cpu_s:.1f} s CPU:\n" + "\n".join(rows)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a local process (0 when it is gone or not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_S

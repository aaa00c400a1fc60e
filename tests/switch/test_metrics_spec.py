"""specs/metrics.md is the list of what the daemon exposes: every ``medswitch_*`` and
``process_*`` family a running daemon's /metrics has is documented there, and every one the
spec documents is exposed (the bank's, switch/bank/observe.py, included)."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import uvloop

from tests.support.daemon import running_daemon, sign_on_once
from tests.support.prometheus import REPO

SPEC = REPO / "specs" / "metrics.md"


def exposed_families(text: str) -> set[str]:
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            if not name.endswith("_created"):  # prometheus-client's creation stamps
                families.add(name)
    return families


def documented() -> set[str]:
    return set(re.findall(r"`((?:medswitch|process|python)_[a-z_]+)`", SPEC.read_text()))


def test_the_spec_lists_exactly_what_the_daemon_exposes(tmp_path: Path) -> None:
    async def main() -> str:
        async with running_daemon(tmp_path, cardholders=1) as daemon:
            await sign_on_once(daemon.app.terminal_port)
            url = f"http://127.0.0.1:{daemon.app.http_port}/metrics"

            def get() -> str:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.read().decode()

            return await asyncio.to_thread(get)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        text = runner.run(asyncio.wait_for(main(), timeout=60))
    exposed = exposed_families(text)
    spec = documented()
    assert exposed - spec == set(), "exposed but not in specs/metrics.md"
    assert spec - exposed == set(), "in specs/metrics.md but not exposed"

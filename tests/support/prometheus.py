"""Debian's Prometheus (`apt-get install prometheus`, which brings promtool) for the tests: a
server of its own (config and data in a temporary directory, a free loopback port) scraping
given targets every second, queried through its HTTP API, stopped by the test.

Absent, the tests that need it skip saying so — except under CI (``CI=true``), where `.ci/run`
installs it and its absence fails the test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.bench_switch import stop

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"
START_S = 60.0
STOP_S = 20.0


def require(tool: str) -> str:
    """The path of ``tool`` (prometheus, promtool); skip without it — fail under CI."""
    found = shutil.which(tool)
    if found is None:
        reason = f"{tool} is not installed (Debian: apt-get install prometheus; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Prometheus:
    url: str

    def api(self, path: str, **parameters: str) -> Any:
        query = urllib.parse.urlencode(parameters)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Poll (bounded) until ``expr`` returns something."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.query(expr)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


@contextlib.contextmanager
def prometheus(
    home: Path, targets: Sequence[str], *, job: str = "medswitch", rules: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port) every second as job ``job``."""
    binary = require("prometheus")
    home.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f'"{target}"' for target in targets)
    # The rules as given, but every group evaluated each second like the scrape, so a short
    # test day sees them evaluated whatever interval the file asks for in production.
    copies = []
    for path in rules:
        copy = home / path.name
        copy.write_text(re.sub(r"(?m)^(\s+)interval: \S+$", r"\1interval: 1s", path.read_text()))
        copies.append(copy)
    rule_files = "".join(f'  - "{path}"\n' for path in copies)
    config = home / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rule_files}" if rules else "")
        + f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
        f"      - targets: [{listed}]\n"
    )
    port = free_port()
    log = (home / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        server = Prometheus(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_S
        while True:
            assert process.poll() is None, (home / "prometheus.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield server
    finally:
        stop(process, timeout_s=STOP_S)
        log.close()


def dashboard_queries(rate_interval: str = "30s") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the Grafana dashboard in ops/, with Grafana's
    ``$__rate_interval`` set to ``rate_interval``."""
    dashboard = json.loads((OPS / "grafana" / "medswitch-dashboard.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            found.append((panel["title"], expr))
    return found

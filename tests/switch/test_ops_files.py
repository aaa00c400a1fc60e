"""The files of ops/ work as shipped: the example production configuration loads, Prometheus's
scrape configuration passes promtool, and the systemd units' commands are commands medswitch
has, with the options they give."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from switch.config import load
from tests.support.prometheus import OPS, REPO, require

BIN = Path(sys.executable).parent


def test_the_example_configuration_loads() -> None:
    config = load(OPS / "medswitch.example.toml", environ={})
    assert config.postgres and config.workers == 2
    assert config.bank.enabled and config.hsm.backend == "network"
    assert config.http.host == "127.0.0.1" and config.http.status_token == ""


def test_promtool_checks_the_scrape_configuration() -> None:
    promtool = require("promtool")
    done = subprocess.run(
        [promtool, "check", "config", "ops/prometheus/prometheus.yml"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("unit", sorted(p.name for p in (OPS / "systemd").glob("*.service")))
def test_a_units_command_exists_with_its_options(unit: str) -> None:
    text = (OPS / "systemd" / unit).read_text()
    assert re.search(r"^\[Service\]$", text, re.MULTILINE)
    (command,) = re.findall(r"^ExecStart=(.+)$", text, re.MULTILINE)
    program, *args = command.split()
    assert program == "/opt/medswitch/.venv/bin/medswitch"
    done = subprocess.run(
        [str(BIN / "medswitch"), *args, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    options = re.findall(r"--[a-z-]+", " ".join(args))
    assert all(option in done.stdout for option in options), (options, done.stdout)

"""README's "One home, operators and the estate" walk-through, run line by line through the
shell exactly as printed, on a demo deployment made by `medswitch demo init` in a fresh
MEDSWITCH_HOME — with no --home, --db or token option anywhere: every command finds the
deployment, its keys and the operator's login in the one home."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND_S = 60.0


def walkthrough() -> list[str]:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- estate-walkthrough -->\n```sh\n(.*?)```\n<!-- end -->", text, re.S)
    assert found, "README lost its estate walk-through"
    return [line for line in found.group(1).splitlines() if line.strip()]


def shell(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    env |= {"MEDSWITCH_HOME": str(home), "PATH": f"{BIN}:{env.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                          timeout=COMMAND_S, cwd=home.parent)


def test_the_estate_walkthrough_runs_as_printed(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    made = shell("medswitch demo init --cardholders 5", home)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "demo-maker" in made.stdout  # the TEST ONLY operators enrolled
    said = {}
    for line in walkthrough():
        done = shell(line, home)
        assert done.returncode == 0, (line, done.stdout + done.stderr)
        said[line.split(" | ")[-1].split(" --")[0]] = done.stdout
    assert "centre/PERSONAL_DATA" in said["medswitch keys list"]  # the home's own keys
    assert "P0000001" in said["medswitch terminals list"]
    assert "next parameter download: version 1" in said["medswitch terminals show P0000100"]
    assert "disabled" in said["medswitch terminals disable P0000100"]
    assert "blacklist version" in said["medswitch blacklist list"]
    assert "0123456789ABCDEF0123" in said["medswitch blacklist list"]
    cards = said["medswitch cards list"]
    assert len(cards.splitlines()) == 3 and re.search(r"\d{6}\*+\d{4}", cards)
    assert re.search(r"^alice\s+active\s+maker$", said["medswitch operators list"], re.M)
    token = home / "operators"
    assert [p.stat().st_mode & 0o777 for p in token.iterdir()] == [0o600]

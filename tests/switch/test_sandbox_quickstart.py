"""The sandbox's quick-start, run verbatim: `medswitch run` (a subprocess on free ports) creates
the demo deployment and prints the commands; each command is run through the shell exactly as
printed, the interactive simulators fed what the quick-start says to type."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_switch import stop
from switch.demo.keys import write_config
from tests.support.serve import wait_serving

BIN = Path(sys.executable).parent
START_S = 120.0
COMMAND_S = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    env |= {"MEDSWITCH_HOME": str(home), "PATH": f"{BIN}:{env.get('PATH', '')}"}
    env["MEDSWITCH_WRITER_PROCESS"] = "0"  # one process to stop
    return env


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    home = tmp_path / "demo"
    home.mkdir()
    write_config(home, terminal_port=free_port(), http_port=free_port())
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        [str(BIN / "medswitch"), "run", "--cardholders", "20"],
        env=environment(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        text = wait_serving(process, Path(log.name), Path(log.name), START_S)
        lines = text.splitlines()
        start = lines.index(next(ln for ln in lines if ln.startswith("# TEST ONLY")))
        printed = [
            ln
            for ln in lines[start:]
            if ln.startswith(("medswitch sim", "MEDSWITCH_", "echo ", "curl "))
        ]
        yield home, printed
    finally:
        stop(process)
        log.close()


def shell(command: str, home: Path, typed: str = "") -> str:
    done = subprocess.run(
        ["bash", "-c", command],
        input=typed,
        capture_output=True,
        text=True,
        env=environment(home),
        timeout=COMMAND_S,
        cwd=home.parent,
    )
    return done.stdout + done.stderr


def test_the_printed_quick_start_works_as_printed(daemon: tuple[Path, list[str]]) -> None:
    home, printed = daemon
    assert [c.split("medswitch ", 1)[-1].split()[0] for c in printed] == [
        "sim",
        "sim",
        "sim",
        "operators",
        "dayend",
        "operators",
        "keys",
        "sim",
        "curl",
    ]
    his, kiosk, pos, login, dayend, custodian, publish, reader, his_book = printed
    readme = (home / "sandbox" / "README.txt").read_text().splitlines()
    assert [ln for ln in readme if not ln.startswith("#")] == printed

    out = shell(his, home)
    found = re.search(r"^bill (\S+) total_fen (\d+)$", out, re.MULTILINE)
    assert found, out
    bill_id, total = found.groups()

    out = shell(kiosk, home, "sign_on\ninsert\nload 20000\nbalance\nquit\n")
    assert "signed on" in out and "loaded 200.00: ED now 200.00" in out, out

    out = shell(pos, home, f"sign_on\nsettle {bill_id} {total}\nsettle_batch\nbook\nquit\n")
    assert f"bill {bill_id}: total {int(total) / 100:.2f}" in out, out
    assert "card ED debited, advice 00" in out and "balanced" in out, out
    # The first card was issued with the sandbox's demo health data (EF 0019, after the PIN).
    assert "by centre): blood A+, allergies PCN, implants -, chronic I10, donor yes" in out, out

    out = shell(login, home)
    assert "logged in as demo-maker (maker)" in out, out
    out = shell(dayend, home)
    assert "has not closed" in out or "report " in out, out

    # The record book: the published key, the emergency block, the book with its signatures
    # checked, and the HIS's read of the centre's copy within the consent window of step 3.
    out = shell(custodian, home)
    assert "logged in as demo-custodian" in out, out
    out = shell(publish, home)
    assert "centre/CARD_SIGN v1 CARD_SIGN fingerprint" in out, out
    out = shell(reader, home, "emergency\nbook\nquit\n")
    assert "emergency block: blood A+, allergies PCN, implants -, donor yes," in out, out
    assert "holder data signed by the centre (key v1)" in out, out
    assert "health data signed by the centre (key v1)" in out, out
    assert "visits on the card: 1" in out, out
    book = json.loads(shell(his_book, home))
    assert book["health"]["blood_type"] == "A+" and book["health"]["signed"]["key_version"] == 1
    assert len(book["visits"]) == 1, book

    listing = json.loads((home / "sandbox" / "terminals.json").read_text())
    assert "TEST ONLY" in listing["test_only"]
    cards = shell("medswitch demo cards", home)
    assert all(c["card_no"] in cards for c in listing["cards"]), cards

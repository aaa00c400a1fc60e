"""`medswitch nac` through its entry point: the README's commands run as printed (check, run as
a process, status while a call has missed its route), and `medswitch sim pos --dial` settling a
bill through the controller against a real daemon."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

from simulators.dial_link import Dial, LineDown, ModemLine
from tests.support.daemon import Daemon, run
from tests.support.nac import NUMBER, running_nac, table_text
from tests.support.settlement import his_get
from tests.support.sim import billed_card, invoke, tmk_file

ROOT = Path(__file__).resolve().parents[2]
MEDSWITCH = str(Path(sys.executable).parent / "medswitch")
COMMAND_S = 60


def readme_commands() -> list[str]:
    """The `medswitch nac` commands of the README's dial-up section, as printed."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Dial-up POS through the access controller", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def argv(command: str) -> list[str]:
    words = command.split()
    assert words[0] == "medswitch", command
    return [MEDSWITCH, *words[1:]]


def test_the_readme_commands_work_as_printed(tmp_path: Path) -> None:
    check, serve, status = readme_commands()
    shutil.copy(ROOT / "specs" / "examples" / "nac.toml", tmp_path / "nac.toml")
    done = subprocess.run(argv(check), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "line 2 line02: " in done.stdout and "2400 bps stx" in done.stdout
    assert "NII 0003 -> 127.0.0.1:5800, 127.0.0.1:5801" in done.stdout
    daemon = subprocess.Popen(
        argv(serve), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert daemon.stdout is not None
        first = daemon.stdout.readline()  # the daemon says it serves once its lines are linked
        assert first.startswith("medswitch nac serving: 2 line(s)"), first
        line = str(tmp_path / "lines" / "line01")

        async def miss() -> None:
            modem = ModemLine(Dial(line, NUMBER, timeout_s=10))
            try:
                await modem.exchange(bytes.fromhex("6000090000") + b"\x02\x00")
                raise AssertionError("a frame for an NII with no route was answered")
            except LineDown as down:
                assert down.sent and "dropped" in str(down)
            finally:
                modem.close()

        asyncio.run(asyncio.wait_for(miss(), COMMAND_S))
        done = subprocess.run(
            argv(status), cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert re.search(
            r"^line line01: \w+, calls connect=1, .*routing_miss=1$", done.stdout, re.M
        )
        assert "line line02: idle, calls -," in done.stdout, done.stdout
        assert "host 127.0.0.1:5800: down, requests 0" in done.stdout, done.stdout
        assert done.stdout.rstrip().endswith("routing misses: NII 0009=1"), done.stdout
    finally:
        daemon.terminate()
        daemon.wait(timeout=COMMAND_S)
    assert daemon.returncode == 0
    assert not (tmp_path / "nac.url").exists()
    done = subprocess.run(argv(status), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "is `medswitch nac run` running?" in done.stderr


def test_a_bad_table_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    table = tmp_path / "nac.toml"
    table.write_text(table_text(tmp_path, {"003": [5800]}))
    for command in ("check", "run"):
        done = subprocess.run(
            [MEDSWITCH, "nac", command, "--table", str(table)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1
        assert done.stderr.strip().endswith("routes[0].nii: four digits, as a string")
    assert not (tmp_path / "line01").exists()


def test_sim_pos_dials_through_the_controller(tmp_path: Path) -> None:
    """`sim pos --dial` over an STX line: sign-on and a bill settled with its personal share in
    cash, closed at the centre, everything else as over TCP."""

    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, token, bill, card_path, psam_path = await billed_card(
            daemon, tmp_path, "HIS-DIAL-CLI"
        )  # B02 × 10: past the deductible
        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        text = table_text(tmp_path, {"0003": [daemon.app.terminal_port]}, framing="stx")
        script = tmp_path / "script.txt"
        script.write_text(f"sign_on\nsettle_cash {bill['bill_id']} {bill['split']['total_fen']}\n")
        args = ["sim", "pos", "--terminal-id", psam_row.terminal_id]
        args += ["--institution", psam_row.institution_id, "--tmk-component", str(tmk)]
        args += ["--state", str(tmp_path / "pos-state.json"), "--psam", str(psam_path)]
        args += ["--pan", on_file.card_no, "--card", str(card_path), "--script", str(script)]
        args += ["--dial", NUMBER, "--modem", str(tmp_path / "line01"), "--framing", "stx"]
        async with running_nac(text) as nac:
            result = await invoke(args)
            assert result.exit_code == 0, result.output
            assert "signed on: batch" in result.output
            assert "bill closed in cash at the centre 00" in result.output
            stats = nac.stats.lines["line01"]
            assert stats.calls["connect"] == 1 and stats.frames_in == stats.frames_out >= 4
        state = await asyncio.to_thread(
            his_get, daemon.app.http_port, psam_row.institution_id, token, bill["bill_id"]
        )
        assert state["state"] == "completed"
        lost = await invoke([*args[:-2], "--modem", str(tmp_path / "nowhere")])
        assert lost.exit_code == 1
        assert "cannot be opened" in lost.output

    run(tmp_path, scenario)


def test_lines_are_unlinked_when_the_controller_stops(tmp_path: Path) -> None:
    async def work() -> None:
        async with running_nac(table_text(tmp_path, {"0003": [5800]})):
            assert (tmp_path / "line01").is_symlink() and (tmp_path / "line02").is_symlink()
        assert not (tmp_path / "line01").exists() and not (tmp_path / "line01").is_symlink()

    asyncio.run(asyncio.wait_for(work(), COMMAND_S))

"""The `log_level` setting through the serving daemon (`medswitch serve`): at the default, info,
every message answered has its line; with `MEDSWITCH_LOG_LEVEL=warning` the same traffic
leaves no info line, and a malformed frame's warning is still written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from messages.codec import Codec
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import SignOn
from messages.terminal_table import build
from switch.demo.keys import provision, write_config
from tests.support.daemon import INSTITUTION, make_database

SCRIPT = str(Path(sys.executable).parent / "medswitch")


async def send(port: int, frame: bytes) -> list[bytes]:
    """One frame on a connection of its own; its reply (none when the daemon closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for _ in range(100):
            data = await asyncio.wait_for(reader.read(4096), timeout=10)
            if not data:
                return []
            if got := decoder.feed(data):
                return got
        return []
    finally:
        writer.close()


def serve_a_sign_on_and_a_bad_frame(home: Path, level: str | None) -> list[dict[str, object]]:
    """`medswitch serve` with ``MEDSWITCH_LOG_LEVEL`` = ``level`` (unset: the default); its
    stderr's JSON lines once it stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    env["MEDSWITCH_HOME"] = str(home)
    if level is not None:
        env["MEDSWITCH_LOG_LEVEL"] = level
    process = subprocess.Popen(
        [SCRIPT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"terminals on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        port = int(match.group(1))
        sign_on = SignOn(stan="000001", terminal_id="POS00001", institution_id=INSTITUTION)
        framed = encode_frame(Codec(TERMINAL).encode(build(sign_on)), LengthFormat.BINARY2)
        assert len(asyncio.run(send(port, framed))) == 1
        asyncio.run(send(port, b"\x00\x06\x60\x00\x00\x00\x00\x99"))  # no message at all
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    return [json.loads(ln) for ln in stderr.splitlines() if ln.startswith("{")]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    make_database(tmp_path / "medswitch.db", {"POS00001": "pos"})
    asyncio.run(provision(tmp_path, ["POS00001"]))
    write_config(tmp_path, terminal_port=0, http_port=0)
    return tmp_path


def test_the_log_level_setting_filters_the_serving_daemons_lines(home: Path) -> None:
    default = serve_a_sign_on_and_a_bad_frame(home, None)
    messages = [e for e in default if e.get("msg") == "message"]
    assert [(e["level"], e["rc"]) for e in messages] == [("info", "00")], default
    assert any(e["level"] == "warning" and "format error" in str(e["msg"]) for e in default)

    quiet = serve_a_sign_on_and_a_bad_frame(home, "warning")
    assert quiet, "no line at all"
    assert {e["level"] for e in quiet} <= {"warning", "error"}, quiet
    assert any(e["level"] == "warning" and "format error" in str(e["msg"]) for e in quiet)

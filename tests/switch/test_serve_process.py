"""`medswitch serve` as a real process on a demo home: serves, then stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from messages.codec import Codec
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import SignOn, SignOnReply
from messages.terminal_table import build, parse
from switch.demo.keys import provision, write_config
from tests.support.daemon import INSTITUTION, make_database

SCRIPT = str(Path(sys.executable).parent / "medswitch")


def test_serve_answers_a_sign_on_and_stops_on_sigterm(tmp_path: Path) -> None:
    make_database(tmp_path / "medswitch.db", {"POS00001": "pos"})
    created = asyncio.run(provision(tmp_path, ["POS00001"]))
    assert "tmk/POS00001" in created and "card/MK_LOAD" in created
    write_config(tmp_path, terminal_port=0, http_port=0)
    env = {**os.environ, "MEDSWITCH_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [SCRIPT, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"terminals on 127\.0\.0\.1:(\d+)", line)
        assert match, line + (process.stderr.read() if process.poll() is not None else "")
        reply = asyncio.run(_sign_on(int(match.group(1))))
        assert reply.response_code == "00"
        assert reply.keys is not None and reply.keys.tdk is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "TEST" not in audit or '"test_only": true' in audit
    assert "0123456789ABCDEF" not in audit  # components never in the audit log


async def _sign_on(port: int) -> SignOnReply:
    codec = Codec(TERMINAL)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = SignOn(stan="000001", terminal_id="POS00001", institution_id=INSTITUTION)
        writer.write(encode_frame(codec.encode(build(request)), LengthFormat.BINARY2))
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for _ in range(100):
            frames = decoder.feed(await asyncio.wait_for(reader.read(4096), timeout=10))
            if frames:
                reply = parse(codec.decode(frames[0]))
                assert isinstance(reply, SignOnReply)
                return reply
        raise AssertionError("no reply")
    finally:
        writer.close()
        await writer.wait_closed()

"""The frame trace (setting ``trace_file``) through the real daemon: every frame in and out is
written masked — the card number taken out and kept as 6 + 4 digits, keys and MACs zeros — and
`medswitch messages decode --trace FILE` reads it back."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
from pathlib import Path

from messages.codec import Codec
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import SignOn
from messages.terminal_table import build
from switch.demo.keys import provision, write_config
from switch.trace import Passing, TraceFormatter, masked
from tests.support.daemon import INSTITUTION, make_database
from tests.support.serve import SCRIPT, serving

GOLDEN = Path(__file__).resolve().parents[2] / "specs" / "examples" / "frames.json"


def golden(transaction: str) -> tuple[bytes, bytes]:
    """A golden exchange's request and reply frames (length prefix included)."""
    for entry in json.loads(GOLDEN.read_text())["frames"]:
        if entry["transaction"] == transaction:
            return bytes.fromhex(entry["request"]), bytes.fromhex(entry["reply"])
    raise AssertionError(transaction)


async def exchange(port: int, frames: list[bytes]) -> list[bytes]:
    """Each frame sent on one connection and its reply read (payloads), bounded in time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies: list[bytes] = []
    try:
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for frame in frames:
            writer.write(frame)
            for _ in range(100):
                got = decoder.feed(await asyncio.wait_for(reader.read(4096), timeout=10))
                if got:
                    replies += got
                    break
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


def test_the_trace_masks_what_it_writes_and_decode_reads_it_back(tmp_path: Path) -> None:
    make_database(tmp_path / "medswitch.db", {"POS00001": "pos"})
    asyncio.run(provision(tmp_path, ["POS00001"]))
    write_config(tmp_path, terminal_port=0, http_port=0)
    trace = tmp_path / "trace.jsonl"
    codec = Codec(TERMINAL)
    inquiry = golden("balance_inquiry")[0]  # K0000001 is no terminal here: refused, traced
    pan = str(codec.decode(inquiry[2:]).fields[2])
    with serving(tmp_path, settings={"MEDSWITCH_TRACE_FILE": str(trace)}) as (process, ports):
        request = SignOn(stan="000001", terminal_id="POS00001", institution_id=INSTITUTION)
        framed = encode_frame(codec.encode(build(request)), LengthFormat.BINARY2)
        replies = asyncio.run(exchange(ports.terminal, [framed, inquiry]))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert len(replies) == 2
    signed_on = codec.decode(replies[0])
    assert signed_on.fields[39] == "00"
    keys, mac = signed_on.fields[62], signed_on.fields[64]
    assert isinstance(keys, bytes) and any(keys) and isinstance(mac, bytes) and any(mac)

    text = trace.read_text()
    lines = [json.loads(ln) for ln in text.splitlines()]
    sides = [(e["interface"], e["direction"]) for e in lines]
    assert sides == [("terminal", "in"), ("terminal", "out")] * 2
    assert pan not in text and keys.hex().upper() not in text and mac.hex().upper() not in text
    traced_reply = codec.decode(bytes.fromhex(lines[1]["frame"])[2:])
    assert traced_reply.fields[62] == bytes(len(keys)) and traced_reply.fields[64] == bytes(8)
    assert traced_reply.fields[39] == "00" and traced_reply.fields[41] == "POS00001"
    expected = masked(codec, LengthFormat.BINARY2, inquiry[2:])
    assert (lines[2]["frame"], lines[2]["masked"]) == expected
    assert lines[2]["masked"] == {"2": f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}"}
    assert oct(trace.stat().st_mode & 0o777) == "0o600"

    decoded = subprocess.run(
        [SCRIPT, "messages", "decode", "--trace", str(trace)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = decoded.stdout
    assert out.count(" terminal in 127.0.0.1") == 2 and out.count(" terminal out ") == 2
    assert "transaction: sign_on" in out and "transaction: balance_inquiry" in out
    assert f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}" in out and pan not in out


def test_a_frame_that_does_not_decode_leaves_only_its_size() -> None:
    payload = bytes.fromhex("0200") + b"6212345678901234567=4912"  # not a terminal frame
    record = logging.LogRecord(
        "medswitch.trace",
        logging.DEBUG,
        "",
        0,
        Passing("terminal", "in", "peer", payload),
        (),
        None,
    )
    line = json.loads(TraceFormatter().format(record))
    assert line["undecodable_bytes"] == len(payload) and "frame" not in line
    assert "6212345678901234567" not in json.dumps(line)
    assert record.getMessage() == "frame terminal in"  # what any other handler would see

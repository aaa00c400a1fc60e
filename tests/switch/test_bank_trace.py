"""The frame trace (setting ``trace_file``) covers the outbound bank link: the daemon's sign-on
to the bank and an EP load's savings debit, each way, masked (card number and account taken
out, MACs zeros), and `medswitch messages decode --trace FILE` reads them back; a frame read
in another dialect (jpos-iso87a's hex bitmap) is written in the bank interface's own encoding,
so decode reads it too."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from messages.codec import Codec, Message
from messages.spec_bank import BANK
from simulators.kiosk import Kiosk
from switch.bank.dialect import PRESETS
from switch.trace import Passing, TraceFormatter, open_trace
from tests.support.bank import bank_daemon
from tests.support.kiosk import PIN
from tests.support.scripted_day import cards_on_file, issue_cards, terminal_link

SCRIPT = str(Path(sys.executable).parent / "medswitch")
KIOSK = "K0000001"


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Path]:
    """The trace on for this test (as `medswitch serve` turns it on), off again after."""
    path = tmp_path / "trace.jsonl"
    logger = logging.getLogger("medswitch.trace")
    before = list(logger.handlers)
    open_trace(path)
    try:
        yield path
    finally:
        for handler in logger.handlers[len(before):]:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)


def test_the_outbound_bank_link_is_traced_masked(tmp_path: Path, traced: Path) -> None:
    async def main() -> tuple[str, int]:
        async with bank_daemon(tmp_path / "daemon") as bank:
            daemon = bank.daemon
            card = cards_on_file(bank.database, 1)[0]
            conns, _ = await issue_cards(daemon, [card])
            link = await terminal_link(
                daemon, KIOSK, "centre", tmp_path / "kiosk.json", daemon.app.terminal_port, 10.0
            )
            try:
                kiosk = Kiosk(link, conns[0], pan=card.card_no, pin=PIN)
                await kiosk.sign_on()
                assert "loaded 30.00" in (await kiosk.ep_load(3_000))[0]  # from bank savings
            finally:
                await link.close()
            return card.card_no, bank.issuer.port

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        pan, port = runner.run(asyncio.wait_for(main(), timeout=120))
    peer = f"127.0.0.1:{port} outbound"
    lines = [json.loads(ln) for ln in traced.read_text().splitlines()]
    outbound = [e for e in lines if e["interface"] == "bank" and e["peer"] == peer]
    mtis = [(e["direction"], bytes.fromhex(e["frame"])[4:8].decode()) for e in outbound]
    assert ("out", "0800") in mtis and ("in", "0810") in mtis  # the link's sign-on
    assert ("out", "0200") in mtis and ("in", "0210") in mtis  # the savings debit
    assert all("frame" in e for e in outbound), outbound  # every one decoded and masked
    debit = next(e for e in outbound if bytes.fromhex(e["frame"])[4:8] == b"0200")
    assert debit["masked"]["2"] == f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}"
    assert pan not in traced.read_text()
    message = Codec(BANK).decode(bytes.fromhex(debit["frame"])[4:])
    mac = message.fields.get(128, message.fields.get(64))
    assert mac is None or mac == bytes(8)

    decoded = subprocess.run(
        [SCRIPT, "messages", "decode", "--trace", str(traced)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert f" bank out {peer}" in decoded.stdout and f" bank in {peer}" in decoded.stdout
    assert "transaction: savings_debit" in decoded.stdout, decoded.stdout
    assert "did not decode" not in decoded.stdout and pan not in decoded.stdout


def test_a_frame_in_another_dialect_is_written_in_the_interface_encoding() -> None:
    jpos = PRESETS["jpos-iso87a"].codec()
    fields = {3: "000000", 11: "000123", 32: "01020000", 39: "00", 70: "001"}
    payload = jpos.encode(Message("0810", fields))
    assert payload != Codec(BANK).encode(Message("0810", fields))  # hex bitmap on the wire
    record = logging.LogRecord("medswitch.trace", logging.DEBUG, "", 0, None, None, None)
    record.msg = Passing("bank", "in", "127.0.0.1:1 outbound", payload, jpos)
    line = json.loads(TraceFormatter().format(record))
    frame = bytes.fromhex(line["frame"])
    assert int(frame[:4]) == len(frame) - 4  # LengthFormat.ASCII4, as decode reads a bank frame
    assert Codec(BANK).decode(frame[4:]).fields == fields

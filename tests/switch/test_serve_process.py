"""`medswitch serve` as a real process on a demo home: serves, then stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from switch.demo.keys import provision, write_config
from tests.support.daemon import make_database, sign_on_once
from tests.support.serve import serving


def test_serve_answers_a_sign_on_and_stops_on_sigterm(tmp_path: Path) -> None:
    make_database(tmp_path / "medswitch.db", {"POS00001": "pos"})
    created = asyncio.run(provision(tmp_path, ["POS00001"]))
    assert "tmk/POS00001" in created and "card/MK_LOAD" in created
    write_config(tmp_path, terminal_port=0, http_port=0)
    with serving(tmp_path) as (process, ports):
        reply = asyncio.run(sign_on_once(ports.terminal))
        assert reply.response_code == "00"
        assert reply.keys is not None and reply.keys.tdk is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "TEST" not in audit or '"test_only": true' in audit
    assert "0123456789ABCDEF" not in audit  # components never in the audit log



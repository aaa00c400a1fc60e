"""`medswitch status` and ``/status`` through the real daemon: `medswitch serve` as a process
answers the command (one screen; exit 0 with a fresh review item, 1 once one has been open over
24 h; exit 2, one line, when no daemon answers), ``/status`` answers only the loopback address
or the status token, and the daemon in a test process reports terminals signed on per
institution, a load in doubt and the review queue as they happen."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from simulators.kiosk import Kiosk
from switch.cli.status import screen
from switch.demo.keys import provision, write_config
from tests.support.bank import BANK, bank_daemon, until
from tests.support.daemon import make_database, running_daemon
from tests.support.kiosk import PIN
from tests.support.prometheus import free_port
from tests.support.scripted_day import issue_cards, terminal_link
from tests.support.serve import serving

BIN = Path(sys.executable).parent
TOKEN = "s3cret-status-token"
KIOSK = "K0000001"


def shell(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSWITCH_")}
    env |= {"MEDSWITCH_HOME": str(home), "PATH": f"{BIN}:{env.get('PATH', '')}"}
    env["MEDSWITCH_HTTP_STATUS_TOKEN"] = TOKEN
    return subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
    )


def get_status(port: int, source: str, token: str = "") -> tuple[int, dict[str, Any]]:
    """GET /status from the local address ``source``."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", "/status", headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_database(tmp_path / "medswitch.db", {"POS00001": "pos"})
    asyncio.run(provision(tmp_path, ["POS00001"]))
    write_config(tmp_path, terminal_port=free_port(), http_port=free_port())
    monkeypatch.setenv("MEDSWITCH_HTTP_STATUS_TOKEN", TOKEN)  # the daemon's (serving's env)
    monkeypatch.setenv("MEDSWITCH_WRITER_PROCESS", "0")
    return tmp_path


def test_medswitch_status_through_the_serving_daemon(home: Path) -> None:
    with sqlite3.connect(home / "medswitch.db") as db:  # a fresh item: the queue at work
        today = dt.date.today()
        for days in range(-2, 2):  # the day-ends around now approved: the review rule alone
            db.execute(
                "INSERT INTO business_days (business_date, status, cutover_at_us, timezone,"
                " run_by, run_started_at_us, run_finished_at_us) VALUES"
                " (?, 'approved', 0, 'UTC', 'test', 0, 0)",
                ((today + dt.timedelta(days=days)).isoformat(),),
            )
        db.execute(
            "INSERT INTO review_items (key, reason, reference, amount_fen, created_at_us)"
            " VALUES ('k2', 'ledger_refused', 'line 9', 300, ?)",
            (int(time.time() * 1e6),),
        )
    with serving(home) as (_, ports):
        done = shell("medswitch status", home)
        assert done.returncode == 0, done.stdout + done.stderr  # listed, not attention
        assert "review queue   1 open: ledger_refused 1 (oldest " in done.stdout
        assert done.stdout.rstrip().endswith("all well"), done.stdout
    with sqlite3.connect(home / "medswitch.db") as db:  # an exception held for days
        db.execute("DELETE FROM review_items")
        db.execute(
            "INSERT INTO review_items (key, reason, reference, amount_fen, created_at_us)"
            " VALUES ('k1', 'bank_unmatched', 'line 7', 1200, ?)",
            (int((time.time() - 3 * 86400) * 1e6),),
        )
    with serving(home) as (_, ports):
        done = shell("medswitch status", home)
        assert done.returncode == 1, done.stdout + done.stderr  # something needs attention
        out = done.stdout
        assert out.startswith("medswitch "), out
        assert "terminals      0 signed on, 0 connections to this worker" in out
        assert "bank links     none configured" in out
        assert "SAF            empty" in out
        assert "loads in doubt none" in out
        assert "review queue   1 open: bank_unmatched 1 (oldest 72.0 h)" in out
        assert "ledger writer  ok" in out
        assert out.rstrip().endswith(
            "attention:\n  - review items open longer than 24 h: bank_unmatched 72 h"
        ), out
        assert "day-end        " in out

        done = shell("medswitch status --json", home)
        assert done.returncode == 1
        answer = json.loads(done.stdout)
        assert answer["review_queue"] == {"bank_unmatched": 1}
        assert answer["dayend"]["state"] == "approved"
        assert answer["ledger_writer"] == "ok"

        # Beyond loopback (127.0.0.2 is not 127.0.0.1): the token, or 403.
        status, body = get_status(ports.http, "127.0.0.2")
        assert status == 403 and body["error"]["code"] == "forbidden"
        assert get_status(ports.http, "127.0.0.2", "wrong")[0] == 403
        status, body = get_status(ports.http, "127.0.0.2", TOKEN)
        assert status == 200 and body["review_queue"] == {"bank_unmatched": 1}
        assert get_status(ports.http, "127.0.0.1")[0] == 200
    done = shell("medswitch status", home)  # the daemon has stopped
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the daemon did not answer" in lines[0], done.stderr


def test_status_follows_sign_ons_and_loads_in_doubt(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=2, backend=backend) as daemon:
            daemon.app.observer.risk.max_age_s = 0  # every /status reads afresh
            port = daemon.app.http_port
            status, before = await asyncio.to_thread(get_status, port, "127.0.0.1")
            assert status == 200 and before["terminals"]["signed_on"] == {}
            assert before["loads_in_doubt"]["count"] == 0
            cards = [daemon.first_card()]
            conns, _ = await issue_cards(daemon, cards)
            link = await terminal_link(
                daemon, KIOSK, "centre", tmp_path / "k.json", daemon.app.terminal_port, 5.0
            )
            try:
                kiosk = Kiosk(link, conns[0], pan=cards[0].card_no, pin=PIN)
                await kiosk.sign_on()
                lines = await kiosk.load(1_500, lose_confirmation=True)
                assert "confirmation was lost" in lines[0], lines
            finally:
                await link.close()
            status, after = await asyncio.to_thread(get_status, port, "127.0.0.1")
            assert status == 200
            (institution,) = daemon.sql(
                "SELECT institution_id FROM terminals WHERE id = ?", (KIOSK,)
            )[0]
            assert after["terminals"]["signed_on"] == {institution: 1}  # its keys proven
            doubt = after["loads_in_doubt"]
            assert (doubt["count"], doubt["fen"], doubt["capped"]) == (1, 1_500, False)
            assert doubt["oldest_age_s"] >= 0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


def test_status_shows_the_bank_links_and_a_reversal_waiting(tmp_path: Path) -> None:
    async def main() -> None:
        async with bank_daemon(tmp_path) as bank:
            observer = bank.app.observer
            observer.risk.max_age_s = 0
            port = bank.app.http_port
            status, answer = await asyncio.to_thread(get_status, port, "127.0.0.1")
            assert status == 200
            (link,) = answer["bank_links"]
            assert link["bank"] == BANK and link["outbound_up"] is True
            assert answer["saf"] == {}
            printed = "\n".join(screen(answer))
            assert f"bank {BANK}  outbound up, inbound 0 connections" in printed
            assert "SAF            empty" in printed

            await bank.issuer.close()  # the bank host goes away
            await until(lambda: not observer.status_of_links()[0]["outbound_up"])
            status, answer = await asyncio.to_thread(get_status, port, "127.0.0.1")
            assert f"bank {BANK}: outbound link down" in answer["attention"]
            assert "outbound DOWN" in "\n".join(screen(answer))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))

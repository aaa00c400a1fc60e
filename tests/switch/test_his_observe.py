"""Every HIS API request through the daemon's HTTP port is counted by route template, status
and institution, timed by route, and logged in one line — a failed login included — with the
institution only when it authenticated, card-number-like digits masked, and never the token."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvloop

from switch.config import Config, HisConfig, HttpConfig
from switch.his_serve import start_his_site
from switch.http_server import HttpLimits
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.his import make_deps
from tests.support.medical_world import memory_service
from tests.support.scripted_day import cards_on_file
from tests.support.settlement import his_get, his_submit, medical_reference

PAN_LIKE = "6212340000000016"


def request(port: int, path: str, user: str, token: str, data: bytes | None = None) -> int:
    credentials = base64.b64encode(f"{user}:{token}".encode()).decode()
    sent = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data,
        headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_his_requests_are_counted_timed_and_logged_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(daemon: Daemon) -> None:
        port = daemon.app.http_port
        institution = daemon.sql("SELECT id FROM institutions WHERE kind = 'hospital' LIMIT 1")[0][
            0
        ]
        token = await asyncio.to_thread(medical_reference, daemon, institution)
        card = cards_on_file(daemon.home / "medswitch.db", 1)[0]
        body = {
            "his_bill_no": "OBS-1",
            "card_no": card.card_no,
            "service_date": now().date().isoformat(),
            "lines": [{"code": "A01", "quantity": 1, "unit_price_fen": 1000}],
        }
        bill = await asyncio.to_thread(his_submit, port, institution, token, body)
        await asyncio.to_thread(his_get, port, institution, token, bill["bill_id"])
        path = f"/his/v1/bills/{PAN_LIKE}"
        assert await asyncio.to_thread(request, port, path, institution, "wrong") == 401
        assert await asyncio.to_thread(request, port, path, institution, token) == 404
        assert await asyncio.to_thread(request, port, "/his/v2/x", "x" * 40, "t") == 404
        too_large = b"[" + b" " * (daemon.app.config.http.body_bytes_max + 10) + b"]"
        status = await asyncio.to_thread(
            request, port, "/his/v1/bills", institution, token, too_large
        )
        assert status == 413

        metrics = daemon.app.metrics
        counted = {
            (s.labels["route"], s.labels["status"], s.labels["institution"]): s.value
            for family in metrics.his_requests.collect()
            for s in family.samples
            if s.name.endswith("_total")
        }
        assert counted == {
            ("POST /his/v1/bills", "201", institution): 1,
            ("GET /his/v1/bills/{bill_id}", "200", institution): 1,
            ("GET /his/v1/bills/{bill_id}", "401", "-"): 1,
            ("GET /his/v1/bills/{bill_id}", "404", institution): 1,
            ("other", "404", "-"): 1,
            ("POST /his/v1/bills", "413", "-"): 1,
        }
        timed = metrics.his_request_seconds.labels("POST /his/v1/bills").totals()[0]
        assert timed[-1] == 2

    caplog.set_level(logging.INFO, logger="medswitch.his")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_run(tmp_path, scenario), timeout=60))
    lines = [r for r in caplog.records if r.name == "medswitch.his"]
    assert len(lines) == 6
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    assert [f["status"] for f in fields] == [201, 200, 401, 404, 404, 413]
    failed = fields[2]
    assert lines[2].levelno == logging.WARNING
    assert failed["authenticated"] is False and failed["institution"] != "-"
    assert failed["path"] == "/his/v1/bills/621234******0016"
    assert fields[4]["institution"] == "-"  # "x" * 40 is no institution id: not logged
    assert all(f["request_id"] for f in fields[:4])
    text = "\n".join(str(f) for f in fields)
    assert PAN_LIKE not in text and "wrong" not in text


async def _run(tmp: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    async with running_daemon(tmp, cardholders=2) as daemon:
        await scenario(daemon)


def test_the_his_api_on_its_own_port_is_observed_too() -> None:
    async def main() -> None:
        deps = make_deps(memory_service())
        config = Config(http=HttpConfig(port=0), his=dataclasses.replace(HisConfig(), port=0))
        site = await start_his_site(deps, HttpLimits(), config)
        try:
            status = await asyncio.to_thread(request, site.port, "/his/v1/bills", "H1", "wrong")
            assert status == 401
        finally:
            await site.runner.cleanup()
        counted = [
            (s.labels["route"], s.labels["status"], s.labels["institution"], s.value)
            for family in deps.metrics.his_requests.collect()
            for s in family.samples
            if s.name.endswith("_total")
        ]
        assert counted == [("GET /his/v1/bills", "401", "-", 1.0)]

    asyncio.run(asyncio.wait_for(main(), timeout=30))

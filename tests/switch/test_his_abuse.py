"""The HIS API under abuse (issue 22, findings 5 and 9): an implausible bill is 422
`bill_over_limit` and stores nothing; failed logins are throttled (429 with Retry-After,
counted); expired bills are swept; a body nested too deep is 400 `malformed_json`; a client
that disconnects mid-body is logged in one line, without a traceback."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ledger.medical.bills import BillState
from ledger.medical.service import MedicalService
from switch.his_api import HisDeps, make_his_app, mount_his_app
from switch.his_throttle import LoginThrottle, ThrottleSettings
from tests.support.his import (
    BILLS,
    H1,
    H2,
    JSON,
    TOKENS,
    basic,
    bill,
    expect_error,
    make_deps,
    nothing_stored,
    serving,
)
from tests.support.medical_world import NOW, memory_service, sql_service

PRICE_CHECK = "/his/v1/price-check"


@pytest.fixture(params=["memory", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> MedicalService:
    if request.param == "memory":
        return memory_service()
    return sql_service(tmp_path / "ledger.db")


def test_the_probed_bill_is_refused_with_422(service: MedicalService) -> None:
    """500 lines × quantity 100 000 × 100 000 000 fen was accepted (201) and reserved the
    person's whole annual pooled cap and personal account."""
    huge = bill(lines=[{"code": "A01", "quantity": 100_000, "unit_price_fen": 10**8}] * 500)
    over_level = bill(lines=[{"code": "A01", "quantity": 3000, "unit_price_fen": 1000}])

    async def main() -> None:
        app = make_his_app(make_deps(service))
        async with serving(app) as url, aiohttp.ClientSession() as session:
            for path in (BILLS, PRICE_CHECK):
                async with session.post(url + path, json=huge, headers=H1) as response:
                    await expect_error(response, 422, "bill_over_limit")
                    assert "300" in (await response.json())["error"]["message"]
            async with session.post(url + BILLS, json=over_level, headers=H1) as response:
                await expect_error(response, 422, "bill_over_limit")  # level 1: 2 000 000 fen
            nothing_stored(service)
            over_level["his_bill_no"] = "N2"
            async with session.post(url + BILLS, json=over_level, headers=H2) as response:
                assert response.status == 201  # level 2 bills up to 20 000 000 fen

    asyncio.run(main())


class CountedCredentials:
    """The test's credentials, counting checks; `gate`, when set, holds each check until set."""

    def __init__(self, deps: HisDeps) -> None:
        self.inner = deps.credentials
        self.checks = 0
        self.gate: threading.Event | None = None

    def check_credential(self, institution_id: str, token: str) -> bool:
        self.checks += 1
        if self.gate is not None:
            assert self.gate.wait(timeout=10)
        return self.inner.check_credential(institution_id, token)


def throttled_deps(now: list[float]) -> tuple[HisDeps, CountedCredentials]:
    deps = make_deps(memory_service())
    counted = CountedCredentials(deps)
    throttle = LoginThrottle(ThrottleSettings(), clock=lambda: now[0])
    return dataclasses.replace(deps, credentials=counted, throttle=throttle), counted


def counter(deps: HisDeps, name: str) -> float:
    return float(getattr(deps.metrics, name)._value.get())


def test_failed_logins_are_throttled_per_id_with_retry_after() -> None:
    now = [1000.0]
    deps, counted = throttled_deps(now)
    wrong = {"Authorization": basic("H001", "wrong")}

    async def main() -> None:
        async with serving(make_his_app(deps)) as url, aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(1000):  # the probe: 1,000 bad logins, all processed
                async with session.post(url + BILLS, json=bill(), headers=wrong) as response:
                    statuses.append(response.status)
                    retry_after = response.headers.get("Retry-After")
            assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
            assert counted.checks == 5 and retry_after == "1"
            async with session.post(url + BILLS, json=bill(), headers=H1) as response:
                await expect_error(response, 429, "too_many_attempts")  # right, but locked
            assert counted.checks == 5
            assert counter(deps, "his_login_failures") == 5
            assert counter(deps, "his_logins_throttled") == 996
            now[0] += 1.5
            async with session.post(url + BILLS, json=bill(), headers=wrong) as response:
                assert response.status == 401  # checked again: the 6th failure, 2 s lock
            async with session.post(url + BILLS, json=bill(), headers=H1) as response:
                assert response.headers["Retry-After"] == "2"
            now[0] += 2.5
            async with session.post(url + BILLS, json=bill(), headers=H1) as response:
                assert response.status == 201  # the lock is over: the right token works
            async with session.post(url + BILLS, json=bill(), headers=H2) as response:
                assert response.status == 200 or response.status == 201  # other ids untouched

    asyncio.run(main())


def test_failed_logins_are_throttled_per_address() -> None:
    now = [1000.0]
    deps, counted = throttled_deps(now)

    async def main() -> None:
        async with serving(make_his_app(deps)) as url, aiohttp.ClientSession() as session:
            for number in range(20):  # a different unknown id each time: only the address
                auth = {"Authorization": basic(f"X{number:03d}", "guess")}
                async with session.post(url + BILLS, json=bill(), headers=auth) as response:
                    await expect_error(response, 401, "unauthorised")
            async with session.post(url + BILLS, json=bill(), headers=H2) as response:
                await expect_error(response, 429, "too_many_attempts")
                assert response.headers["Retry-After"] == "1"
            assert counted.checks == 20

    asyncio.run(main())


def test_a_suspect_id_has_one_check_in_flight() -> None:
    now = [1000.0]
    deps, counted = throttled_deps(now)
    wrong = {"Authorization": basic("H001", "wrong")}

    async def main() -> None:
        async with serving(make_his_app(deps)) as url, aiohttp.ClientSession() as session:
            async with session.post(url + BILLS, json=bill(), headers=wrong) as response:
                assert response.status == 401  # one failure: the id is suspect
            counted.gate = threading.Event()

            async def attempt() -> int:
                async with session.post(url + BILLS, json=bill(), headers=wrong) as response:
                    return response.status

            first = asyncio.create_task(attempt())
            for _ in range(200):  # bounded: until the first one's check is in flight
                if counted.checks == 2:
                    break
                await asyncio.sleep(0.01)
            rest = await asyncio.gather(*(attempt() for _ in range(20)))
            counted.gate.set()
            assert await first == 401 and rest == [429] * 20 and counted.checks == 2

    asyncio.run(main())


def test_an_address_that_logged_in_is_not_locked_out_by_strangers() -> None:
    now = [0.0]
    throttle = LoginThrottle(ThrottleSettings(id_failures_max=3), clock=lambda: now[0])
    throttle.succeeded("H001", "10.1.1.1")  # the hospital's own charging system
    for _ in range(50):
        throttle.failed("H001", f"192.0.2.{_ % 2}")  # strangers guessing its token
    assert throttle.retry_after_s("H001", "192.0.2.9") == 300.0  # capped
    assert throttle.retry_after_s("H001", "10.1.1.1") == 0.0
    now[0] = 301.0
    assert throttle.retry_after_s("H001", "192.0.2.9") == 0.0
    for _ in range(3):
        throttle.failed("H001", "10.1.1.1")  # counts for the address only
    assert throttle.retry_after_s("H001", "10.1.1.1") == 0.0
    now[0] = 10_000.0
    assert throttle.retry_after_s("H001", "192.0.2.9") == 0.0  # quiet: forgotten
    small = LoginThrottle(ThrottleSettings(keys_max=2), clock=lambda: now[0])
    for number in range(10):
        small.failed(f"H{number}", f"10.0.0.{number}")
    assert len(small._ids._by_key) == 2 and len(small._addresses._by_key) == 2
    with pytest.raises(ValueError):
        ThrottleSettings(delay_s=0)


def test_expired_bills_are_swept_in_the_mounted_application(tmp_path: Path) -> None:
    service = sql_service(tmp_path / "ledger.db")
    clock = [NOW]
    deps = dataclasses.replace(make_deps(service), clock=lambda: clock[0], expiry_sweep_s=0.02)

    async def main() -> None:
        parent = web.Application()
        mount_his_app(parent, deps)
        async with serving(parent) as url, aiohttp.ClientSession() as session:
            async with session.post(url + BILLS, json=bill(), headers=H1) as response:
                assert response.status == 201
                created = await response.json()
            assert created["expires_at"] == (NOW + dt.timedelta(hours=2)).isoformat()
            clock[0] = NOW + dt.timedelta(hours=2, seconds=1)
            for _ in range(500):  # bounded: 10 s
                record = service.get_bill(created["bill_id"])
                if record is not None and record.state is BillState.EXPIRED:
                    break
                await asyncio.sleep(0.02)
            assert record is not None and record.state is BillState.EXPIRED
        nothing_stored_now = service.accumulators("P11", 2026)
        assert nothing_stored_now[1] == nothing_stored_now[0]

    asyncio.run(main())


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_body_nested_too_deep_is_400(caplog: pytest.LogCaptureFixture, depth: int) -> None:
    body = b"[" * depth + b"]" * depth

    async def main() -> None:
        app = make_his_app(make_deps(memory_service()))
        async with serving(app) as url, aiohttp.ClientSession() as session:
            for path in (BILLS, PRICE_CHECK):
                async with session.post(url + path, data=body, headers=H1 | JSON) as response:
                    await expect_error(response, 400, "malformed_json")

    asyncio.run(main())
    assert tracebacks(caplog) == []


def test_a_client_gone_mid_body_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    auth = basic("H001", TOKENS["H001"])
    head = (
        f"POST {BILLS} HTTP/1.1\r\nHost: his\r\nAuthorization: {auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )

    def gone() -> list[Any]:
        return [r for r in caplog.records if "disconnected mid-body" in r.getMessage()]

    async def main() -> None:
        app = make_his_app(make_deps(memory_service()))
        async with serving(app) as url:
            host, port = url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(head.encode() + b'{"his_bill_no": "N1", ')
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            for _ in range(200):  # bounded: 4 s
                if gone():
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # anything else it would log

    asyncio.run(main())
    assert len(gone()) == 1 and tracebacks(caplog) == []


def test_the_his_section_configures_limits_holds_and_throttle() -> None:
    from types import SimpleNamespace

    from ledger.medical.limits import BillLimits
    from switch.app import _medical_service
    from switch.config import ConfigError, HisConfig, load

    assert HisConfig().bill_limits() == BillLimits()  # one set of defaults
    assert HisConfig().throttle_settings() == ThrottleSettings()
    environ = {
        "MEDSWITCH_HOME": "/nonexistent",
        "MEDSWITCH_HIS_LEVEL1_TOTAL_MAX_FEN": "5000",
        "MEDSWITCH_HIS_OPEN_BILL_TTL_S": "600",
        "MEDSWITCH_HIS_LOGIN_ID_FAILURES_MAX": "3",
    }
    config = load(environ=environ)
    assert config.his.throttle_settings().id_failures_max == 3
    world = memory_service()
    stores = SimpleNamespace(medical_store=world.store, directory=world.directory)
    service = _medical_service(stores, config)  # type: ignore[arg-type]
    assert service.limits.total_max_fen(1) == 5000
    assert service.open_ttl == dt.timedelta(minutes=10)
    assert service.bill_ttl == dt.timedelta(hours=24)
    for wrong in ({"MEDSWITCH_HIS_LINES_MAX": "0"}, {"MEDSWITCH_HIS_OPEN_BILL_TTL_S": "1e9"}):
        with pytest.raises(ConfigError, match="his"):
            load(environ={"MEDSWITCH_HOME": "/nonexistent", **wrong})


def test_a_failed_sweep_is_one_line_and_the_next_round_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from switch.his_sweep import sweep_expired_bills

    calls: list[dt.datetime] = []

    def expire(now: dt.datetime) -> list[str]:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("the medical store is closed")
        return ["0123456789ABCDEF"]

    async def main() -> None:
        task = asyncio.create_task(sweep_expired_bills(expire, lambda: NOW, 0.01))
        for _ in range(500):  # bounded: 5 s
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    caplog.set_level(logging.INFO)
    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "medswitch.his"]
    assert messages[:2] == [
        "bill expiry sweep failed: RuntimeError: the medical store is closed",
        "expired 1 bills, their reservations released",
    ]
    assert tracebacks(caplog) == []

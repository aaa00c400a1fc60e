"""The HIS API over HTTP on 127.0.0.1: bills in, splits out, each institution alone with its
bills; malformed JSON, unknown cards, wrong or missing credentials and another institution's bill
answer clear 4xx JSON errors and store nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ledger.medical.accumulators import ZERO
from ledger.medical.service import MedicalService
from switch.his_api import make_his_app, mount_his_app
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
from tests.support.medical_world import HOLDERS, memory_service, sql_service

Body = Callable[[aiohttp.ClientSession, str, MedicalService], Awaitable[None]]


@pytest.fixture(params=["memory", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> MedicalService:
    if request.param == "memory":
        return memory_service()
    return sql_service(tmp_path / "ledger.db")


def run(service: MedicalService, body: Body) -> None:
    async def main() -> None:
        app = make_his_app(make_deps(service))
        async with serving(app) as url, aiohttp.ClientSession() as session:
            await body(session, url, service)

    asyncio.run(main())


def test_submit_query_cancel(service: MedicalService) -> None:
    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.status == 201
            created = await response.json()
        split = created["split"]
        assert created["state"] == "open"
        assert (split["personal_account_fen"], split["pooled_fen"], split["self_pay_fen"]) == (
            30000,
            9000,
            1800,
        )
        assert split["lines"][1]["parts"] == [
            {"share": "self_pay", "amount_fen": 800, "reason": "CLASS_C"}
        ]
        assert any("丙类自费" in line for line in split["explanation"])
        bill_id = created["bill_id"]
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.status == 200  # the same bill again: stored once
            assert (await response.json())["bill_id"] == bill_id
        assert svc.accumulators("P11", 2026)[1].deductible_fen == 30000
        async with session.get(f"{url}{BILLS}/{bill_id}", headers=H1) as response:
            assert response.status == 200
            assert (await response.json())["split"] == split
        async with session.get(f"{url}{BILLS}/{bill_id}", headers=H2) as response:
            await expect_error(response, 404, "not_found")  # another institution's bill
        async with session.post(f"{url}{BILLS}/{bill_id}/cancel", headers=H2) as response:
            await expect_error(response, 404, "not_found")
        async with session.post(f"{url}{BILLS}/{bill_id}/cancel", headers=H1) as response:
            assert response.status == 200
            assert (await response.json())["state"] == "cancelled"
        async with session.post(f"{url}{BILLS}/{bill_id}/cancel", headers=H1) as response:
            assert response.status == 200
        assert svc.accumulators("P11", 2026) == (ZERO, ZERO)
        async with session.post(url + BILLS, json=bill(lines=[]), headers=H1) as response:
            await expect_error(response, 400, "invalid_request")

    run(service, body)


def test_price_check_stores_nothing(service: MedicalService) -> None:
    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        async with session.post(url + "/his/v1/price-check", json=bill(), headers=H1) as response:
            assert response.status == 200
            assert (await response.json())["split"]["total_fen"] == 40800
        nothing_stored(svc)

    run(service, body)


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("not JSON", b"{bill: 1", 400, "malformed_json"),
    ("not UTF-8", b"\xff\xfe{}", 400, "bad_encoding"),
    ("GBK", "{\"门诊\": 1}".encode("gbk"), 400, "bad_encoding"),
    ("a BOM", b"\xef\xbb\xbf{}", 400, "bad_encoding"),
    ("an array", [], 400, "invalid_request"),
    ("missing lines", {k: v for k, v in bill().items() if k != "lines"}, 400, "invalid_request"),
    ("unknown field", bill(discount_fen=5), 400, "invalid_request"),
    (
        "quantity zero",
        bill(lines=[{"code": "A01", "quantity": 0, "unit_price_fen": 1}]),
        400,
        "invalid_request",
    ),
    (
        "price as text",
        bill(lines=[{"code": "A01", "quantity": 1, "unit_price_fen": "1"}]),
        400,
        "invalid_request",
    ),
    (
        "quantity true",
        bill(lines=[{"code": "A01", "quantity": True, "unit_price_fen": 1}]),
        400,
        "invalid_request",
    ),
    ("bad date", bill(service_date="2026-02-30"), 400, "invalid_request"),
    ("bad card number", bill(card="62000000000000000x"), 400, "invalid_request"),
    ("unknown card", bill(card="6200000000000000999"), 422, "unknown_card"),
    ("lost card", bill(card=HOLDERS[2].card_no), 422, "card_not_active"),
    ("no policy for the year", bill(service_date="2019-01-01"), 422, "no_rules"),
    ("a service date after today", bill(service_date="2026-11-26"), 422, "service_date_in_future"),
    (
        "an unknown code",
        bill(lines=[{"code": "a01", "quantity": 1, "unit_price_fen": 5}]),
        422,
        "unknown_item",
    ),
]


@pytest.mark.parametrize(
    ("name", "payload", "status", "code"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES]
)
def test_bad_requests_store_nothing(
    service: MedicalService, name: str, payload: Any, status: int, code: str
) -> None:
    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        if isinstance(payload, bytes):
            request = session.post(url + BILLS, data=payload, headers=H1 | JSON)
        else:
            request = session.post(url + BILLS, json=payload, headers=H1)
        async with request as response:
            await expect_error(response, status, code)
        nothing_stored(svc)

    run(service, body)


def test_credentials(service: MedicalService) -> None:
    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        for auth in [
            {},
            {"Authorization": basic("H001", "wrong")},
            {"Authorization": basic("H404", "x")},
            {"Authorization": basic("H001", TOKENS["H002"])},
        ]:
            async with session.post(url + BILLS, json=bill(), headers=auth) as response:
                await expect_error(response, 401, "unauthorised")
                assert response.headers["WWW-Authenticate"].startswith("Basic")
        for header in ["Bearer abc", "Basic !!!", "Basic " + "SDAwMQ==", "Basic"]:
            async with session.post(
                url + BILLS, json=bill(), headers={"Authorization": header}
            ) as response:
                await expect_error(response, 401, "unauthorised")
        nothing_stored(svc)

    run(service, body)


def test_protocol_errors(service: MedicalService) -> None:
    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        async with session.post(
            url + BILLS, data="x", headers=H1 | {"Content-Type": "text/plain"}
        ) as response:
            await expect_error(response, 415, "unsupported_media_type")
        big = b'{"x": "' + b"a" * 300_000 + b'"}'
        async with session.post(url + BILLS, data=big, headers=H1 | JSON) as response:
            await expect_error(response, 413, "too_large")
        async with session.delete(url + BILLS, headers=H1) as response:
            await expect_error(response, 405, "method_not_allowed")
        async with session.get(url + BILLS + "/nonsense", headers=H1) as response:
            await expect_error(response, 404, "not_found")
        async with session.get(url + "/elsewhere", headers=H1) as response:
            await expect_error(response, 404, "not_found")
        nothing_stored(svc)

    run(service, body)


def test_mounted_beside_other_routes() -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def main() -> None:
        parent = web.Application()
        parent.router.add_get("/healthz", healthz)
        svc = memory_service()
        mount_his_app(parent, make_deps(svc))
        async with serving(parent) as url, aiohttp.ClientSession() as session:
            async with session.get(url + "/healthz") as response:
                assert response.status == 200
            async with session.post(url + BILLS, json=bill()) as response:
                await expect_error(response, 401, "unauthorised")
            async with session.post(url + BILLS, json=bill(), headers=H1) as response:
                assert response.status == 201
                bill_id = (await response.json())["bill_id"]
            async with session.get(f"{url}{BILLS}/{bill_id}", headers=H2) as response:
                await expect_error(response, 404, "not_found")
            async with session.get(url + "/his/v1/elsewhere", headers=H1) as response:
                await expect_error(response, 404, "not_found")

    asyncio.run(main())


def test_concurrent_bills_over_http_never_share_the_deductible(tmp_path: Path) -> None:
    service = sql_service(tmp_path / "ledger.db")

    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        async def submit(number: int) -> int:
            payload = bill(
                f"C{number}", lines=[{"code": "A01", "quantity": 10, "unit_price_fen": 1000}]
            )
            async with session.post(url + BILLS, json=payload, headers=H1) as response:
                assert response.status == 201
                split = (await response.json())["split"]
                return int(split["accumulator_delta"]["deductible_fen"])

        used = await asyncio.gather(*(submit(n) for n in range(8)))
        assert sorted(used) == [0] * 5 + [10000] * 3
        assert svc.accumulators("P11", 2026)[1].deductible_fen == 30000

    run(service, body)

"""What a hospital's integrator expects of the HIS API (issue 26, items 10 and 12 and the build
list), through its HTTP interface: catalogue codes and categories refused with the line's
pointer, the catalogue endpoint, service dates in the centre's zone, the request rate per
institution, the Idempotency-Key, a price check without a bill number, and the settings of
the API's own TLS port. (The daemon's TLS port and the generated client:
tests/contract/test_his_client.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from ledger.medical.directory import MemoryDirectory
from ledger.medical.service import MedicalService
from switch.config import ConfigError, HisConfig
from switch.his_api import HisDeps, make_his_app
from switch.his_idempotency import fingerprint
from switch.his_rate import RateLimiter, RateSettings
from tests.support.his import BILLS, CARD, H1, H2, JSON, bill, expect_error, make_deps, serving
from tests.support.medical_world import memory_service

CATALOGUE = "/his/v1/catalogue"
PRICE_CHECK = "/his/v1/price-check"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
Body = Callable[[aiohttp.ClientSession, str, MedicalService], Awaitable[None]]


def run(body: Body, adjust: Callable[[HisDeps], HisDeps] = lambda deps: deps) -> None:
    service = memory_service()
    directory = service.directory
    assert isinstance(directory, MemoryDirectory)
    directory.kinds.update({"H001": "hospital", "H002": "pharmacy"})

    async def main() -> None:
        app = make_his_app(adjust(make_deps(service)))
        async with serving(app) as url, aiohttp.ClientSession() as session:
            await body(session, url, service)

    asyncio.run(main())


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    error: dict[str, Any] = (await response.json())["error"]
    return error


def lines(*codes: str) -> list[dict[str, Any]]:
    return [{"code": code, "quantity": 1, "unit_price_fen": 100} for code in codes]


# -- item 10: catalogue codes and categories ------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "codes", "code", "field"),
    [
        (H1, ("A01", "a02"), "unknown_item", "/lines/1/code"),  # a typo: codes are case-sensitive
        (H1, ("Z99",), "unknown_item", "/lines/0/code"),
        (H2, ("A01", "A02"), "category_not_allowed", "/lines/1/code"),
    ],
    ids=["typo", "unknown", "pharmacy-consultation"],
)
def test_lines_the_institution_may_not_bill_are_refused_with_their_pointer(
    headers: dict[str, str], codes: tuple[str, ...], code: str, field: str
) -> None:
    async def body(session: aiohttp.ClientSession, url: str, service: MedicalService) -> None:
        for path in (BILLS, PRICE_CHECK):
            sent = bill(lines=lines(*codes))
            async with session.post(url + path, json=sent, headers=headers) as response:
                await expect_error(response, 422, code)
                error = await error_of(response)
                assert error["field"] == field
                assert codes[int(field.split("/")[2])] in error["message"]
        for institution in ("H001", "H002"):
            assert service.bills_of(institution, "", EPOCH, 10) == []

    run(body)


def test_a_pharmacy_may_bill_drugs() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        sent = bill(lines=lines("A01", "B01", "C01"))
        async with session.post(url + BILLS, json=sent, headers=H2) as response:
            assert response.status == 201, await response.text()

    run(body)


def test_the_catalogue_shows_units_categories_caps_and_what_the_caller_may_bill() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        pages: list[dict[str, Any]] = []
        cursor: dict[str, str] = {}
        for _ in range(10):
            query = {"limit": "2", "on": "2026-11-25", **cursor}
            async with session.get(url + CATALOGUE, params=query, headers=H2) as response:
                assert response.status == 200, await response.text()
                pages.append(await response.json())
                etag = response.headers["ETag"]
            if pages[-1]["next_cursor"] is None:
                break
            cursor = {"cursor": pages[-1]["next_cursor"]}
        items = [item for page in pages for item in page["items"]]
        assert [i["code"] for i in items] == ["A01", "A02", "B01", "B02", "C01"]
        b01 = next(i for i in items if i["code"] == "B01")
        assert b01 == {
            "code": "B01", "name": "头孢克洛缓释片", "unit": "盒", "category": "drug",
            "ceiling_fen": 2000, "coverage": "乙", "self_pay_bp": 1000, "billable": True,
        }
        a02 = next(i for i in items if i["code"] == "A02")
        assert (a02["category"], a02["billable"]) == ("general", False)  # H002 is a pharmacy
        assert pages[0]["version"] == 1 and pages[0]["policy_year"] == 2026
        query = {"limit": "2", "on": "2026-11-25", **cursor}
        headers = H2 | {"If-None-Match": etag}
        async with session.get(url + CATALOGUE, params=query, headers=headers) as response:
            assert response.status == 304 and response.headers["ETag"] == etag
        async with session.get(url + CATALOGUE, headers=H1) as response:  # today: a hospital
            assert all(i["billable"] for i in (await response.json())["items"])
        for query, status, field in (
            ({"on": "2026-13-01"}, 400, "?on"),
            ({"limit": "501"}, 400, "?limit"),
            ({"cursor": "!!"}, 400, "?cursor"),
            ({"sort": "name"}, 400, "?sort"),
            ({"on": "2019-06-01"}, 422, "?on"),  # no catalogue then
        ):
            async with session.get(url + CATALOGUE, params=query, headers=H1) as response:
                assert response.status == status
                assert (await error_of(response))["field"] == field

    run(body)


# -- item 12: dates, rate, price check ------------------------------------------------------------
def test_a_service_date_after_today_in_the_centres_zone_is_refused() -> None:
    # the clock: 2026-11-25 09:00 UTC, 17:00 in Asia/Shanghai
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        async with session.post(url + BILLS, json=bill(service_date="2026-11-26"), headers=H1) as r:
            await expect_error(r, 422, "service_date_in_future")
            assert (await error_of(r))["field"] == "/service_date"
        async with session.post(url + BILLS, json=bill(), headers=H1) as r:
            assert r.status == 201

    run(body)


@pytest.mark.parametrize(("zone", "status"), [("Asia/Shanghai", 201), ("UTC", 422)])
def test_today_is_the_centres_zone_s(zone: str, status: int) -> None:
    late = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)  # 04:00 on the 26th in Shanghai

    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        sent = bill(service_date="2026-11-26")
        async with session.post(url + BILLS, json=sent, headers=H1) as response:
            assert response.status == status, await response.text()

    run(body, lambda deps: dataclasses.replace(deps, clock=lambda: late, timezone=zone))


def test_each_institution_has_its_request_rate() -> None:
    now = [0.0]
    rate = RateLimiter(RateSettings(per_s=0.5, burst=2), clock=lambda: now[0])

    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        for _ in range(2):
            async with session.get(url + BILLS, headers=H1) as response:
                assert response.status == 200
        async with session.get(url + BILLS, headers=H1) as response:
            await expect_error(response, 429, "rate_limited")
            assert response.headers["Retry-After"] == "2"
        async with session.get(url + BILLS, headers=H2) as response:  # another institution
            assert response.status == 200
        now[0] = 2.0
        async with session.get(url + BILLS, headers=H1) as response:
            assert response.status == 200

    run(body, lambda deps: dataclasses.replace(deps, rate=rate))


def test_a_price_check_needs_no_bill_number() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        sent = {k: v for k, v in bill().items() if k != "his_bill_no"}
        async with session.post(url + PRICE_CHECK, json=sent, headers=H1) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["split"]["total_fen"] == 40_800

    run(body)


# -- the Idempotency-Key --------------------------------------------------------------------------
def test_an_idempotency_key_replays_refuses_reuse_and_keeps_no_refusal() -> None:
    async def body(session: aiohttp.ClientSession, url: str, service: MedicalService) -> None:
        key = {"Idempotency-Key": "3f1c0c1e-7d7a-4c53-9d42-0d6b8b3e2a11"}
        refused = bill(lines=lines("a01"))
        async with session.post(url + BILLS, json=refused, headers=H1 | key) as response:
            await expect_error(response, 422, "unknown_item")
        async with session.post(url + BILLS, json=bill(), headers=H1 | key) as response:
            assert response.status == 201  # the refusal kept nothing: the key is free
            first = await response.json()
        reordered = dict(reversed(list(bill().items())))  # the same JSON, keys in another order
        async with session.post(url + BILLS, json=reordered, headers=H1 | key) as response:
            assert response.status == 201 and response.headers["Idempotent-Replayed"] == "true"
            assert await response.json() == first
        async with session.post(url + BILLS, json=bill("N2"), headers=H1 | key) as response:
            await expect_error(response, 422, "idempotency_key_reused")
            assert (await error_of(response))["field"] == "header:Idempotency-Key"
        async with session.post(url + BILLS, json=bill("N2"), headers=H2 | key) as response:
            assert response.status == 201  # keys are the institution's own
        assert service.get_bill(first["bill_id"]) is not None
        cancel = f"{BILLS}/{first['bill_id']}/cancel"
        for expected in ("cancelled", "cancelled"):
            async with session.post(url + cancel, headers=H1 | {"Idempotency-Key": "c1"}) as r:
                assert r.status == 200 and (await r.json())["state"] == expected
        for used, status, code in (("c1", 422, "idempotency_key_reused"),  # for the cancel
                                   ("a b", 400, "invalid_request")):
            headers = H1 | {"Idempotency-Key": used}
            async with session.post(url + BILLS, json=bill(), headers=headers) as response:
                await expect_error(response, status, code)

    run(body)


def test_a_key_whose_first_request_is_still_answered_is_409_with_retry_after() -> None:
    deps_of: list[HisDeps] = []

    def keep(deps: HisDeps) -> HisDeps:
        deps_of.append(deps)
        return deps

    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        print_ = fingerprint("POST", BILLS, bill())
        assert deps_of[0].idempotency.begin("H001", "k", print_) is None  # in flight
        headers = H1 | {"Idempotency-Key": "k"}
        async with session.post(url + BILLS, json=bill(), headers=headers) as response:
            await expect_error(response, 409, "request_in_progress")
            assert response.headers["Retry-After"] == "1"

    run(body, keep)


# -- the API's own port: settings -----------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        {"tls_cert": "c.pem"},
        {"tls_cert": "c.pem", "tls_key": "k.pem"},  # TLS needs the API's own port
        {"port": 70_000},
        {"rate_burst": 0},
        {"idempotency_retention_s": 0},
    ],
)
def test_his_settings_that_cannot_work_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="his"):
        HisConfig(**settings)


def test_a_utf8_charset_is_accepted_and_another_is_415() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        data = b'{"his_bill_no": "N1", "card_no": "' + CARD.encode() + b'"}'
        headers = H1 | {"Content-Type": "application/json; charset=UTF-8"}
        async with session.post(url + BILLS, data=data, headers=headers) as response:
            await expect_error(response, 400, "invalid_request")  # utf-8 accepted; lines missing
        headers = H1 | {"Content-Type": "application/json; charset=iso-8859-1"}
        async with session.post(url + BILLS, data=data, headers=headers) as response:
            await expect_error(response, 415, "unsupported_media_type")
        assert JSON["Content-Type"] == "application/json"

    run(body)


# -- listing queries: what a number and a date-time are ------------------------------------------
@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        (BILLS, {"limit": "²"}, "?limit"),  # str.isdigit() says yes, int() raised: it was a 500
        (BILLS, {"limit": "٣"}, "?limit"),  # Arabic-Indic 3: it was taken as 3
        (BILLS, {"his_bill_no": "N1", "limit": "²"}, "?limit"),
        (CATALOGUE, {"limit": "²"}, "?limit"),
        ("/his/v1/reconciliation", {"service_date": "2026-11-25", "limit": "²"}, "?limit"),
        ("/his/v1/reconciliation", {"service_date": "２０２６-11-25"}, "?service_date"),
        (BILLS, {"since": "20261125T000000+0800"}, "?since"),  # ISO 8601 basic, not RFC 3339
        (BILLS, {"since": "2026-11-25 00:00:00+08:00"}, "?since"),
        (BILLS, {"since": "2026-11-25T00:00:00+0800"}, "?since"),
    ],
)
def test_a_limit_and_a_since_are_ascii_rfc_3339_or_a_400(
    path: str, query: dict[str, str], field: str
) -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        async with session.get(url + path, params=query, headers=H1) as response:
            await expect_error(response, 400, "invalid_request")
            assert (await error_of(response))["field"] == field

    run(body)


def test_rfc_3339_lower_case_t_and_z_and_fractions_are_a_since() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        for since in ("2026-11-25t00:00:00z", "2026-11-25T00:00:00.123456789+08:00"):
            async with session.get(url + BILLS, params={"since": since}, headers=H1) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["bills"] == []

    run(body)

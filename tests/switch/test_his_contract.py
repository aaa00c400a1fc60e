"""The HIS API as a contract (issue 26, HIS items 7, 8, 9, 11): the body limit the spec states
wherever the application is mounted, money fields as 64-bit integers, a retry that gets the
stored bill whatever happened to the card since, lookup and listing by the hospital's own bill
number, and an extensible error object with a request id and a field pointer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from ledger.medical.directory import MemoryDirectory
from ledger.medical.service import MedicalService
from switch.his_api import BODY_BYTES_MAX, make_his_app, mount_his_app
from tests.support.his import BILLS, CARD, H1, H2, JSON, bill, expect_error, make_deps, serving
from tests.support.medical_pg import BACKENDS, service_on
from tests.support.medical_world import NOW, memory_service

SPEC = Path(__file__).parents[2] / "specs" / "his-api.yaml"
RECON = "/his/v1/reconciliation"
SHARES = ("total_fen", "personal_account_fen", "pooled_fen", "self_pay_fen")
Body = Callable[[aiohttp.ClientSession, str, MedicalService], Awaitable[None]]


def run(body: Body, *, mounted: bool = False, service: MedicalService | None = None) -> None:
    svc = service or memory_service()

    async def main() -> None:
        if mounted:  # aiohttp's own default for the parent: 1 MiB
            app = web.Application()
            mount_his_app(app, make_deps(svc))
        else:
            app = make_his_app(make_deps(svc))
        async with serving(app) as url, aiohttp.ClientSession() as session:
            await body(session, url, svc)

    asyncio.run(main())


def _spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


# -- item 9: the body limit, money as int64 ------------------------------------------------------
def test_the_body_limit_is_256_kib_even_when_mounted_in_a_larger_application() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        big = b'{"x": "' + b"a" * 300_000 + b'"}'  # under the parent's 1 MiB, over the HIS limit
        async with session.post(url + BILLS, data=big, headers=H1 | JSON) as response:
            await expect_error(response, 413, "too_large")
            assert "256 KiB" in (await response.json())["error"]["message"]

        async def chunks() -> Any:  # no Content-Length: the limit holds as the body is read
            for _ in range(40):
                yield b" " * 10_000

        async with session.post(url + BILLS, data=chunks(), headers=H1 | JSON) as response:
            await expect_error(response, 413, "too_large")

    run(body, mounted=True)
    assert BODY_BYTES_MAX == 256 * 1024
    assert "256 KiB" in _spec()["components"]["responses"]["TooLarge"]["description"]


def _fen_properties(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_fen") and isinstance(value, dict) and "type" in value:
                found.append((f"{path}/{key}", value))
            found += _fen_properties(value, f"{path}/{key}")
    return found


def test_every_money_field_of_the_spec_is_a_64_bit_integer() -> None:
    fields = _fen_properties(_spec())
    assert len(fields) >= 10
    assert [name for name, schema in fields if schema.get("format") != "int64"] == []
    total = _spec()["components"]["schemas"]["Split"]["properties"]["total_fen"]
    assert "bill_over_limit" in total["description"]  # the cap on a bill's total, stated


# -- item 7: a retry gets the stored bill, whatever happened to the card since -------------------
def _report_lost(service: MedicalService) -> None:
    directory = service.directory
    assert isinstance(directory, MemoryDirectory)
    directory.cards[CARD] = dataclasses.replace(directory.cards[CARD], card_status="lost")


def test_a_retry_after_the_card_was_reported_lost_gets_the_stored_bill() -> None:
    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.status == 201
            stored = await response.json()
        _report_lost(svc)
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == stored
        other = bill(lines=[{"code": "A01", "quantity": 1, "unit_price_fen": 1000}])
        async with session.post(url + BILLS, json=other, headers=H1) as response:
            await expect_error(response, 409, "duplicate_bill_no")  # other content: still 409
        async with session.post(url + BILLS, json=bill("N2"), headers=H1) as response:
            await expect_error(response, 422, "card_not_active")  # a new bill: refused
        cancel = f"{url}{BILLS}/{stored['bill_id']}/cancel"
        async with session.post(cancel, headers=H1) as response:
            assert response.status == 200
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.status == 200  # the stored bill as it is now; nothing new
            assert (await response.json())["state"] == "cancelled"
        assert svc.accumulators("P11", 2026)[1].deductible_fen == 0  # released, not re-held

    run(body)


# -- item 8: the bill by the hospital's own number, and the listing -----------------------------
def test_a_duplicate_bill_no_names_the_stored_bill_which_the_lookup_finds() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        async with session.post(url + BILLS, json=bill("Rx-1"), headers=H1) as response:
            stored = await response.json()
        reordered = bill("Rx-1")
        reordered["lines"].reverse()  # "the same content" is the lines in order
        async with session.post(url + BILLS, json=reordered, headers=H1) as response:
            await expect_error(response, 409, "duplicate_bill_no")
            assert (await response.json())["error"]["bill_id"] == stored["bill_id"]
        lookup = {"his_bill_no": "Rx-1"}
        async with session.get(url + BILLS, params=lookup, headers=H1) as response:
            assert response.status == 200
            assert await response.json() == {"bills": [stored], "next_cursor": None}
        for params, headers in (({"his_bill_no": "rx-1"}, H1), (lookup, H2)):
            async with session.get(url + BILLS, params=params, headers=headers) as response:
                assert response.status == 200  # case-sensitive; the institution's own bills only
                assert await response.json() == {"bills": [], "next_cursor": None}

    run(body)


def test_the_same_content_is_the_parsed_json_not_its_text() -> None:
    """The spec's "the same content": key order, whitespace, and special_category null or
    absent are the same bill (200, counted once); a number not written as an integer is no
    bill at all (400), so it never makes a retry differ."""

    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        async with session.post(url + BILLS, json=bill("S-1"), headers=H1) as response:
            assert response.status == 201
            stored = await response.json()
        _, view = svc.accumulators("P11", 2026)
        same = bill("S-1", special_category=None)
        texts = [
            json.dumps(dict(reversed(list(bill("S-1").items())))),  # keys in another order
            json.dumps(bill("S-1"), indent=4, separators=(" , ", " : ")),  # other whitespace
            json.dumps(same),  # special_category null, not absent
        ]
        for text in texts:
            async with session.post(url + BILLS, data=text, headers=H1 | JSON) as response:
                assert response.status == 200, await response.text()
                assert await response.json() == stored
        assert svc.accumulators("P11", 2026)[1] == view  # counted once
        spelled = json.dumps(bill("S-1")).replace('"unit_price_fen": 1000', '"unit_price_fen": 1e3')
        async with session.post(url + BILLS, data=spelled, headers=H1 | JSON) as response:
            await expect_error(response, 400, "invalid_request")
            assert (await response.json())["error"]["field"] == "/lines/0/unit_price_fen"

    run(body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancelled_bills_number_stays_taken_and_the_409_says_so(
    backend: str, tmp_path: Path
) -> None:
    """The spec's decision: a number belongs to its bill for good (the POS's bill_id is derived
    from it); a new bill under a cancelled bill's number is 409 naming that bill and its state,
    and the same bill under a new number is accepted."""

    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        async with session.post(url + BILLS, json=bill("RX-9"), headers=H1) as response:
            assert response.status == 201
            stored = await response.json()
        cancel = f"{url}{BILLS}/{stored['bill_id']}/cancel"
        async with session.post(cancel, headers=H1) as response:
            assert response.status == 200
        corrected = bill("RX-9", lines=[{"code": "A01", "quantity": 2, "unit_price_fen": 1000}])
        async with session.post(url + BILLS, json=corrected, headers=H1) as response:
            await expect_error(response, 409, "duplicate_bill_no")
            error = (await response.json())["error"]
        assert error["bill_id"] == stored["bill_id"]
        assert f"bill {stored['bill_id']} (cancelled)" in error["message"]
        assert "a new bill needs a new number" in error["message"]
        async with session.post(url + BILLS, json={**corrected, "his_bill_no": "RX-9-2"},
                                headers=H1) as response:
            assert response.status == 201
            assert (await response.json())["bill_id"] != stored["bill_id"]
        async with session.get(url + BILLS, params={"his_bill_no": "RX-9"}, headers=H1) as found:
            assert [b["state"] for b in (await found.json())["bills"]] == ["cancelled"]

    with service_on(backend, tmp_path) as service:
        run(body, service=service)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_listing_pages_through_the_institutions_own_bills(backend: str, tmp_path: Path) -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        for number in range(5):
            async with session.post(url + BILLS, json=bill(f"L{number}"), headers=H1) as response:
                assert response.status == 201
        async with session.post(url + BILLS, json=bill("OTHER"), headers=H2) as response:
            assert response.status == 201
        seen: list[str] = []
        params: dict[str, str] = {"limit": "2", "since": "2026-11-25T00:00:00Z"}
        for _page in range(5):
            async with session.get(url + BILLS, params=params, headers=H1) as response:
                assert response.status == 200, await response.text()
                page = await response.json()
            seen += [found["his_bill_no"] for found in page["bills"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == [f"L{number}" for number in range(5)]
        later = {"since": "2026-11-26T00:00:00+08:00"}  # after NOW: nothing
        async with session.get(url + BILLS, params=later, headers=H1) as response:
            assert await response.json() == {"bills": [], "next_cursor": None}
        for wrong, where in (({"limit": "101"}, "?limit"), ({"cursor": "!!"}, "?cursor")):
            async with session.get(url + BILLS, params=wrong, headers=H1) as response:
                await expect_error(response, 400, "invalid_request")
                assert (await response.json())["error"]["field"] == where

    with service_on(backend, tmp_path) as service:
        run(body, service=service)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_reconciliation_lists_a_service_dates_bills_with_shares_and_totals(
    backend: str, tmp_path: Path
) -> None:
    """Build: "a reconciliation listing" — a service date's bills in every state with their
    shares, page by page, and the whole date's totals per state on every page."""

    async def body(session: aiohttp.ClientSession, url: str, svc: MedicalService) -> None:
        stored = {}
        for number in ("R1", "R2", "R3", "R5"):
            async with session.post(url + BILLS, json=bill(number), headers=H1) as response:
                stored[number] = await response.json()
        other_day = bill("R4", service_date="2026-11-24")
        async with session.post(url + BILLS, json=other_day, headers=H1) as response:
            assert response.status == 201
        async with session.post(url + BILLS, json=bill("R1"), headers=H2) as response:
            assert response.status == 201  # another institution's bill of the day
        async with session.post(f"{url}{BILLS}/{stored['R2']['bill_id']}/cancel",
                                headers=H1) as response:
            assert response.status == 200
        r3 = stored["R3"]
        svc.approve_bill(r3["bill_id"], "H001", CARD, NOW, r3["split"]["total_fen"])
        svc.complete_bill(r3["bill_id"], NOW)

        lines, totals = [], []
        params = {"service_date": "2026-11-25", "limit": "2"}
        for _page in range(5):
            async with session.get(url + RECON, params=params, headers=H1) as response:
                assert response.status == 200, await response.text()
                page = await response.json()
            lines += page["bills"]
            totals.append(page["totals"])
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert [(x["his_bill_no"], x["state"]) for x in lines] == [
            ("R1", "open"), ("R2", "cancelled"), ("R3", "completed"), ("R5", "open")]
        for line in lines:
            split = stored[line["his_bill_no"]]["split"]
            assert line["bill_id"] == stored[line["his_bill_no"]]["bill_id"]
            assert [line[k] for k in SHARES] == [split[k] for k in SHARES]
            assert line["total_fen"] == sum(line[k] for k in SHARES[1:])
        by_state = {"cancelled": ["R2"], "completed": ["R3"], "open": ["R1", "R5"]}
        assert all(t == totals[0] for t in totals) and totals[0] == [  # on every page
            {"state": state, "bills": len(numbers),
             **{k: sum(stored[no]["split"][k] for no in numbers) for k in SHARES}}
            for state, numbers in by_state.items()]
        async with session.get(url + RECON, params={"service_date": "2026-11-23"},
                               headers=H1) as response:
            assert await response.json() == {"service_date": "2026-11-23", "totals": [],
                                             "bills": [], "next_cursor": None}
        for wrong, where in (({}, "?service_date"), ({"service_date": "2026-13-01"},
                                                      "?service_date"),
                             ({"service_date": "2026-11-25", "since": "x"}, "?since"),
                             ({"service_date": "2026-11-25", "limit": "0"}, "?limit")):
            async with session.get(url + RECON, params=wrong, headers=H1) as response:
                await expect_error(response, 400, "invalid_request")
                assert (await response.json())["error"]["field"] == where

    with service_on(backend, tmp_path) as service:
        run(body, service=service)


# -- item 11: the error object -------------------------------------------------------------------
def test_errors_carry_a_request_id_and_point_at_the_field() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        wrong = bill()
        wrong["lines"][1]["quantity"] = 0
        async with session.post(url + BILLS, json=wrong, headers=H1) as response:
            await expect_error(response, 400, "invalid_request")
            error = (await response.json())["error"]
            assert error["field"] == "/lines/1/quantity"
            assert error["request_id"] == response.headers["X-Request-Id"]
            assert error["message"]  # the old members stay
        async with session.post(url + BILLS, json={"card_no": CARD}, headers=H1) as response:
            assert (await response.json())["error"]["field"] == "/his_bill_no"
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.status == 201
            first = response.headers["X-Request-Id"]
        async with session.post(url + BILLS, json=bill(), headers=H1) as response:
            assert response.headers["X-Request-Id"] not in ("", first)

    run(body)


def test_every_his_path_answers_the_error_shape_in_a_parent_application() -> None:
    async def body(session: aiohttp.ClientSession, url: str, _: MedicalService) -> None:
        async with session.delete(url + BILLS, headers=H1) as response:
            await expect_error(response, 405, "method_not_allowed")
        for path in ("/his/v2/bills", "/his/", "/his/v1x"):
            async with session.get(url + path, headers=H1) as response:
                await expect_error(response, 404, "not_found")
                assert (await response.json())["error"]["request_id"]

    run(body, mounted=True)


def test_the_spec_leaves_the_error_code_open() -> None:
    error = _spec()["components"]["schemas"]["Error"]["properties"]["error"]
    assert "enum" not in error["properties"]["code"]
    assert error.get("additionalProperties", True) is True
    assert {"request_id", "field", "bill_id"} <= set(error["properties"])


def test_the_document_is_1_minor_and_each_minor_is_in_the_changelog() -> None:
    """Versioning: `info.version` is 1.MINOR, MINOR growing with each compatible addition, each
    recorded in specs/CHANGELOG.md; the path's version is /his/v1."""
    version = str(_spec()["info"]["version"])
    major, _, minor = version.partition(".")
    assert major == "1" and minor.isdigit(), version
    changelog = (SPEC.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    for each in range(1, int(minor) + 1):
        assert f"his-api 1.{each}:" in changelog, f"his-api 1.{each} is not in the CHANGELOG"
    assert all(path.startswith("/his/v1/") for path in _spec()["paths"])

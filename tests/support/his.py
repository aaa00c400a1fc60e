"""Run the HIS application on 127.0.0.1, port 0, for a test (in the test's loop, or in a thread
of its own for synchronous HTTP clients such as schemathesis)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from ledger.medical.accumulators import ZERO
from ledger.medical.bills import bill_id_for
from ledger.medical.service import MedicalService
from switch.his_api import HisDeps, MemoryCredentials
from tests.support.medical_world import HOLDERS, NOW

TOKENS = {"H001": "token-of-h001", "H002": "token-of-h002"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def make_deps(service: MedicalService) -> HisDeps:
    credentials = MemoryCredentials()
    for institution, token in TOKENS.items():
        credentials.issue(institution, token)
    return HisDeps(service, credentials, clock=lambda: NOW)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serving_in_thread(app: web.Application) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        async with serving(app) as url:
            ready.append(url)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(timeout=30):
        raise RuntimeError("the HIS test server did not start")
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


# What the HIS API tests share: the demo hospitals' headers, a bill, the error check.
CARD = HOLDERS[0].card_no
H1 = {"Authorization": basic("H001", TOKENS["H001"])}
H2 = {"Authorization": basic("H002", TOKENS["H002"])}
JSON = {"Content-Type": "application/json"}
BILLS = "/his/v1/bills"


def bill(no: str = "N1", card: str = CARD, **extra: Any) -> dict[str, Any]:
    return {
        "his_bill_no": no,
        "card_no": card,
        "service_date": "2026-11-25",
        "lines": [
            {"code": "A01", "quantity": 40, "unit_price_fen": 1000},
            {"code": "C01", "quantity": 1, "unit_price_fen": 800},
        ],
        **extra,
    }


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert (await response.json())["error"]["code"] == code


def nothing_stored(service: MedicalService) -> None:
    assert service.accumulators("P11", 2026) == (ZERO, ZERO)
    assert service.get_bill(bill_id_for("H001", "N1")) is None

"""A hospital charging system (HIS) simulator: realistic itemised bills built from the
catalogue, submitted to the centre's HIS API over HTTP (specs/his-api.yaml).

A bill is one visit: a consultation or service item, then one to five drugs or services of the
catalogue, mostly at or below the ceiling price; now and then a price above the ceiling, a
class 丙 item or a code the catalogue does not know, as real charging systems send. Generation
is deterministic for a seed (`random.Random`).

>>> import datetime as dt, random
>>> from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
>>> catalogue = CatalogueVersion(1, dt.date(2026, 1, 1),
...     {"A01": CatalogueItem("A01", "诊查费", "次", 500, Coverage.A)})
>>> day = dt.date(2026, 11, 25)
>>> body = make_bill(random.Random(1), catalogue, "6200000000000000011", "S1", day)
>>> body["his_bill_no"], body["lines"][0]["code"]
('S1', 'A01')
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ledger.medical.catalogue import CatalogueVersion, Coverage

LINES_EXTRA_MAX = 5
ABOVE_CEILING_RATE = 0.05
BILLS_MAX = 1_000_000
TIMEOUT_S = 30.0


def make_bill(
    rng: random.Random,
    catalogue: CatalogueVersion,
    card_no: str,
    his_bill_no: str,
    day: dt.date,
    special_category: str | None = None,
) -> dict[str, Any]:
    """One visit's bill as the HIS API's JSON body."""
    codes = sorted(catalogue.items)
    if not codes:
        raise ValueError("an empty catalogue")
    covered = [c for c in codes if catalogue.items[c].coverage is not Coverage.C] or codes
    extra = rng.sample(codes, k=min(len(codes), rng.randint(1, LINES_EXTRA_MAX)))
    chosen = [rng.choice(covered), *extra]
    lines = []
    for code in chosen:
        item = catalogue.items[code]
        price = (
            item.ceiling_fen
            if rng.random() < 0.7
            else rng.randint(item.ceiling_fen * 8 // 10, max(item.ceiling_fen, 1))
        )
        if rng.random() < ABOVE_CEILING_RATE:
            price = item.ceiling_fen + rng.randint(1, max(1, item.ceiling_fen // 5))
        lines.append({"code": code, "quantity": rng.randint(1, 3), "unit_price_fen": price})
    body: dict[str, Any] = {
        "his_bill_no": his_bill_no,
        "card_no": card_no,
        "service_date": day.isoformat(),
        "lines": lines,
    }
    if special_category is not None:
        body["special_category"] = special_category
    return body


class HisApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        """The API's error code, or the HTTP status when the body has none."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("code", self.status)) if isinstance(error, dict) else str(self.status)


class HisClient:
    """The charging system's side of the API."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, institution_id: str, token: str
    ) -> None:
        self.session = session
        self.url = url.rstrip("/") + "/his/v1"
        credentials = base64.b64encode(f"{institution_id}:{token}".encode()).decode()
        self.headers = {"Authorization": "Basic " + credentials}

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with self.session.request(
            method, self.url + path, json=body, headers=self.headers, timeout=timeout
        ) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise HisApiError(response.status, payload)
            return response.status, payload

    async def submit(self, bill: dict[str, Any]) -> dict[str, Any]:
        return dict((await self._call("POST", "/bills", bill))[1])

    async def price_check(self, bill: dict[str, Any]) -> dict[str, Any]:
        return dict((await self._call("POST", "/price-check", bill))[1]["split"])

    async def get(self, bill_id: str) -> dict[str, Any]:
        return dict((await self._call("GET", f"/bills/{bill_id}"))[1])

    async def cancel(self, bill_id: str) -> dict[str, Any]:
        return dict((await self._call("POST", f"/bills/{bill_id}/cancel"))[1])


@dataclass
class Summary:
    submitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    total_fen: int = 0
    personal_account_fen: int = 0
    pooled_fen: int = 0
    self_pay_fen: int = 0
    bill_ids: list[str] = field(default_factory=list)
    totals_fen: dict[str, int] = field(default_factory=dict)  # by bill id, as the HIS answered


async def simulate(
    client: HisClient,
    catalogue: CatalogueVersion,
    cards: Sequence[str],
    count: int,
    *,
    seed: int = 0,
    day: dt.date,
    prefix: str = "SIM",
    cancel_rate: float = 0.0,
    concurrency: int = 4,
) -> Summary:
    """Submit `count` bills (bounded by BILLS_MAX) for random `cards`, `concurrency` at a time;
    cancel a share of them. Bill numbers are `<prefix>-<seed>-<n>`, so a rerun with the same
    seed resubmits the same bills (and the centre counts each once)."""
    rng = random.Random(seed)
    bodies = [
        make_bill(rng, catalogue, rng.choice(list(cards)), f"{prefix}-{seed}-{n}", day)
        for n in range(min(count, BILLS_MAX))
    ]
    cancels = {n for n in range(len(bodies)) if rng.random() < cancel_rate}
    summary = Summary()
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(n: int, body: dict[str, Any]) -> None:
        async with limit:
            try:
                bill = await client.submit(body)
            except HisApiError as error:
                code = error.code
                summary.refused[code] = summary.refused.get(code, 0) + 1
                return
            split = bill["split"]
            summary.submitted += 1
            summary.bill_ids.append(bill["bill_id"])
            summary.totals_fen[bill["bill_id"]] = split["total_fen"]
            summary.total_fen += split["total_fen"]
            summary.personal_account_fen += split["personal_account_fen"]
            summary.pooled_fen += split["pooled_fen"]
            summary.self_pay_fen += split["self_pay_fen"]
            if n in cancels:
                await client.cancel(bill["bill_id"])
                summary.cancelled += 1

    await asyncio.gather(*(one(n, body) for n, body in enumerate(bodies)))
    summary.bill_ids.sort()
    return summary

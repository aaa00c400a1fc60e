"""``GET /his/v1/catalogue`` (specs/his-api.yaml, "Catalogue"): the catalogue in force on a
date as the centre prices with it — code, name, unit, price ceiling, coverage class and
self-pay ratio of each item, its billing category from that year's policy, and whether the
asking institution may bill it — page by page by code, with an ETag: a client that sends the
page's ETag back in If-None-Match gets 304 while nothing on the page changed."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from ledger.medical.catalogue import CatalogueVersion
from ledger.medical.directory import Directory
from ledger.medical.policy import Policy
from switch.his_parse import DATE, ApiError, encode_cursor, parse_cursor, parse_limit

LIMIT_MAX = 500
LIMIT_DEFAULT = 200


@dataclass(frozen=True, slots=True)
class CatalogueQuery:
    day: dt.date
    after_code: str
    limit: int


def parse_catalogue_query(query: dict[str, str], today: dt.date) -> CatalogueQuery:
    unknown = sorted(set(query) - {"on", "limit", "cursor"})
    if unknown:
        message = f"unknown query parameters {unknown}"
        raise ApiError(400, "invalid_request", message, field="?" + unknown[0])
    day: dt.date | None = today
    if "on" in query:
        try:
            day = dt.date.fromisoformat(query["on"]) if DATE.match(query["on"]) else None
        except ValueError:
            day = None
        if day is None:
            raise ApiError(400, "invalid_request", "on is a date (YYYY-MM-DD)", field="?on")
    limit = parse_limit(query, LIMIT_DEFAULT, LIMIT_MAX)
    after = parse_cursor(query["cursor"]) if "cursor" in query else ""
    assert day is not None
    return CatalogueQuery(day, after, limit)


def _rules(directory: Directory, day: dt.date) -> tuple[CatalogueVersion, Policy]:
    catalogue, policy = directory.catalogue_on(day), directory.policy(day.year)
    if catalogue is None or policy is None:
        raise ApiError(422, "no_rules", f"no catalogue or policy in force on {day}", field="?on")
    return catalogue, policy


def catalogue_page(
    catalogue: CatalogueVersion, policy: Policy, kind: str | None, wanted: CatalogueQuery
) -> dict[str, Any]:
    codes = [code for code in sorted(catalogue.items) if code > wanted.after_code]
    page = codes[: wanted.limit]
    items = []
    for code in page:
        item = catalogue.items[code]
        category = policy.item_category(code)
        items.append(
            {
                "code": code,
                "name": item.name,
                "unit": item.unit,
                "category": category,
                "ceiling_fen": item.ceiling_fen,
                "coverage": item.coverage.value,
                "self_pay_bp": item.self_pay_bp,
                "billable": kind is None or policy.may_bill(kind, category),
            }
        )
    more = len(codes) > wanted.limit
    return {
        "version": catalogue.number,
        "effective_from": catalogue.effective_from.isoformat(),
        "policy_year": policy.year,
        "on": wanted.day.isoformat(),
        "items": items,
        "next_cursor": encode_cursor(page[-1]) if more and page else None,
    }


async def catalogue_response(
    request: web.Request,
    directory: Directory,
    institution_id: str,
    clock: Callable[[], dt.datetime],
    zone: ZoneInfo,
) -> web.Response:
    wanted = parse_catalogue_query(dict(request.query), clock().astimezone(zone).date())
    catalogue, policy = await asyncio.to_thread(_rules, directory, wanted.day)
    kind = await asyncio.to_thread(directory.institution_kind, institution_id)
    page = catalogue_page(catalogue, policy, kind, wanted)
    body = json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)

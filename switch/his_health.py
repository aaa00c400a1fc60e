"""``PUT /his/v1/cards/{card_no}/health`` (specs/his-api.yaml, specs/card-layout.md): an
authorised clinical institution — a hospital — sends a cardholder's health data; the centre
keeps it sealed (ledger.medical.card_copies, ``card_health``), pending until a card of the
person is written with it. Any other institution (a pharmacy) is refused 403 ``not_authorised``
and the attempt goes to review (``health_update_refused``); the data are not kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hsm.errors import HsmError
from ledger.core import ReviewItem, transfer_id
from ledger.medical.card_copies import VisitCopies
from ledger.medical.directory import Cardholder
from ledger.medical.service import MedicalService, micros
from messages.card_records import DONOR_NO, DONOR_UNKNOWN, DONOR_YES, HealthData, RecordFormatError
from messages.pretty import mask_pan
from switch.his_auth import credentials
from switch.his_body import json_body
from switch.his_parse import ApiError

AUTHORISED_KINDS = ("hospital",)  # clinical institutions; a pharmacy dispenses, it does not
REFUSED = "health_update_refused"
CARD_NO = re.compile(r"[0-9]{12,19}")
DONOR = {"not_recorded": DONOR_UNKNOWN, "donor": DONOR_YES, "not_donor": DONOR_NO}
FIELDS = {
    "blood_type", "organ_donor", "emergency_phone", "allergies", "implants", "chronic_conditions",
}  # fmt: skip
Reviews = Callable[[ReviewItem], Awaitable[object]]


def _strings(body: dict[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_request", f"{name}: a list of strings", field=f"/{name}")
    return tuple(value)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{name}: a string", field=f"/{name}")
    return value


def parse_health(body: Any, institution_id: str, at: dt.datetime) -> HealthData:
    """The request's health data as EF 0019 will hold it; ApiError 400 where it does not fit."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body is a JSON object", field="")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(
            400, "invalid_request", f"unknown field {unknown[0]}", field=f"/{unknown[0]}"
        )
    donor = _text(body, "organ_donor") or "not_recorded"
    if donor not in DONOR:
        raise ApiError(
            400, "invalid_request", "organ_donor: " + ", ".join(DONOR), field="/organ_donor"
        )
    health = HealthData(
        _text(body, "blood_type"),
        _strings(body, "allergies"),
        _strings(body, "implants"),
        _text(body, "emergency_phone"),
        DONOR[donor],
        _strings(body, "chronic_conditions"),
        institution_id,
        at.strftime("%Y%m%d%H%M%S"),
    )
    try:
        health.encode()
    except RecordFormatError as bad:
        raise ApiError(400, "invalid_request", f"the card's health file: {bad}") from None
    return health


async def put_health(
    request: web.Request, service: MedicalService, reviews: Reviews | None, now: dt.datetime
) -> web.Response:
    institution = credentials(request)[0]
    card_no = request.match_info["card_no"]
    if not CARD_NO.fullmatch(card_no):
        raise ApiError(404, "not_found", "no such card")
    copies: VisitCopies | None = service.visit_copies
    if copies is None or reviews is None:  # a HIS server without the daemon's stores
        raise ApiError(404, "not_found", "this centre keeps no health data")
    body = await json_body(request)
    holder: Cardholder | None = await asyncio.to_thread(service.directory.cardholder, card_no)
    if holder is None:
        raise ApiError(422, "unknown_card", "no such card")
    kind = await asyncio.to_thread(service.directory.institution_kind, institution)
    if kind not in AUTHORISED_KINDS:
        subject = f"institution|{institution}|card|{holder.application_serial}"
        detail = f"a health data update by an institution of kind {kind or 'unknown'}"
        item = ReviewItem(transfer_id("review", REFUSED, subject), REFUSED, subject, 0, detail)
        await reviews(item)
        raise ApiError(403, "not_authorised", "only a clinical institution updates health data")
    health = parse_health(body, institution, now)
    try:
        await copies.keep_health(holder.person_id, institution, health.encode(), micros(now))
    except (HsmError, LookupError) as error:
        raise ApiError(
            503, "not_available", f"health data cannot be sealed ({type(error).__name__})"
        ) from None
    answer = {
        "card_no": mask_pan(card_no),
        "status": "pending",
        "updated_by": institution,
        "updated_at": now.isoformat(),
    }
    return web.json_response(answer, status=202)

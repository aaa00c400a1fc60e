"""``PUT /his/v1/cards/{card_no}/health`` (specs/his-api.yaml, specs/card-layout.md): an
institution authorised to write health data (its ``health_writer`` attribute: by default every
hospital and nothing else; `medswitch institutions authorise-health|revoke-health`) sends a
cardholder's health data; the centre keeps it sealed (ledger.medical.card_copies,
``card_health``), pending until a card of the person is written with it. Any other institution
is refused 403 ``not_authorised`` and the attempt goes to review (``health_update_refused``);
the data are not kept.
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
from messages.card_records import HealthData
from messages.pretty import mask_pan
from switch.card_io.health_input import HealthFieldError, health_of
from switch.his_auth import credentials
from switch.his_body import json_body
from switch.his_parse import ApiError

REFUSED = "health_update_refused"
CARD_NO = re.compile(r"[0-9]{12,19}")
Reviews = Callable[[ReviewItem], Awaitable[object]]


def parse_health(body: Any, institution_id: str, at: dt.datetime) -> HealthData:
    """The request's health data as EF 0019 will hold it; ApiError 400 where it does not fit."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body is a JSON object", field="")
    try:
        return health_of(body, institution_id, at.strftime("%Y%m%d%H%M%S"))
    except HealthFieldError as bad:
        raise ApiError(400, "invalid_request", str(bad), field=f"/{bad.field}") from None


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
    if not await asyncio.to_thread(service.directory.may_write_health, institution):
        subject = f"institution|{institution}|card|{holder.application_serial}"
        detail = "a health data update by an institution not authorised to write health data"
        item = ReviewItem(transfer_id("review", REFUSED, subject), REFUSED, subject, 0, detail)
        await reviews(item)
        raise ApiError(
            403, "not_authorised", "this institution is not authorised to write health data"
        )
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

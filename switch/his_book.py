"""``GET /his/v1/cards/{card_no}/book`` (specs/his-api.yaml, specs/card-layout.md "Consent"):
the centre's copy of the card's record book — the person's health data (with the centre's
signature over them, as the card holds it) and the newest visits the centre wrote to the card,
decoded — for an institution whose POS the cardholder gave the
PIN within the last 30 minutes (a settlement carrying the card's health file, readable only
after VERIFY, opens that window: routing.health_contact). Outside it: 403 ``consent_required``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from hsm.errors import HsmError
from ledger.medical.card_copies import Signed, VisitCopies
from ledger.medical.directory import Cardholder
from ledger.medical.service import MedicalService, micros
from messages.card_records import DONOR_NO, DONOR_YES, HealthData, RecordFormatError, Visit
from messages.pretty import mask_pan
from switch.his_auth import credentials
from switch.his_health import CARD_NO
from switch.his_parse import ApiError

DONOR_NAMES = {DONOR_YES: "donor", DONOR_NO: "not_donor"}  # else not_recorded


def _from_micros(value: int, zone: dt.tzinfo | None) -> str:
    return dt.datetime.fromtimestamp(value / 1_000_000, dt.UTC).astimezone(zone).isoformat()


def _when(digits: str) -> str:
    """BCD yyyymmddhhmmss → ``yyyy-mm-ddThh:mm:ss`` (the card's own, in the centre's zone)."""
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:{digits[12:]}"


def _dotted(code: str) -> str:
    return code if len(code) <= 3 or "." in code else f"{code[:3]}.{code[3:]}"


def signed_json(signed: Signed | None) -> dict[str, Any] | None:
    """The health message and the centre's signature over it, in hex (card-layout.md
    "Signatures"): what a HIS checks offline with the centre's published key."""
    if signed is None:
        return None
    return {
        "key_version": signed.version,
        "message": signed.message.hex().upper(),
        "signature": signed.signature.hex().upper(),
    }


def health_json(data: bytes, pending: bool, signed: Signed | None) -> dict[str, Any]:
    health = HealthData.decode(data)
    return {
        "blood_type": health.blood_type,
        "organ_donor": DONOR_NAMES.get(health.donor, "not_recorded"),
        "emergency_phone": health.emergency_phone,
        "allergies": list(health.allergies),
        "implants": list(health.implants),
        "chronic_conditions": [_dotted(c) for c in health.chronic],
        "updated_by": health.updated_by,
        "updated_at": _when(health.updated_at),
        "pending": pending,
        "signed": signed_json(signed),
    }


def visit_json(raw: bytes) -> dict[str, Any]:
    visit = Visit.decode(raw)
    return {
        "date": f"{visit.date[:4]}-{visit.date[4:6]}-{visit.date[6:]}",
        "institution_id": visit.institution_id,
        "department": visit.department,
        "diagnoses": [_dotted(c) for c in visit.diagnoses],
        "bill_id": visit.bill_id,
        "total_fen": visit.total_fen,
        "personal_fen": visit.personal_fen,
        "pooled_fen": visit.pooled_fen,
        "self_pay_fen": visit.self_pay_fen,
    }


async def get_book(request: web.Request, service: MedicalService, now: dt.datetime) -> web.Response:
    institution = credentials(request)[0]
    card_no = request.match_info["card_no"]
    if not CARD_NO.fullmatch(card_no):
        raise ApiError(404, "not_found", "no such card")
    copies: VisitCopies | None = service.visit_copies
    if copies is None:  # a HIS server without the daemon's stores
        raise ApiError(404, "not_found", "this centre keeps no record books")
    holder: Cardholder | None = await asyncio.to_thread(service.directory.cardholder, card_no)
    if holder is None:
        raise ApiError(422, "unknown_card", "no such card")
    serial = holder.application_serial
    consent = await copies.consent(institution, serial)
    now_us = micros(now)
    if consent is None or not consent.opened_at_us <= now_us < consent.until_us:
        raise ApiError(
            403,
            "consent_required",
            "the cardholder has not given the PIN at this institution in the last 30 minutes",
        )
    try:
        kept = await copies.health(holder.person_id)
        visits = await copies.visits(serial)
        health = None
        if kept is not None:
            scripts = copies.scripts
            signed = None if scripts is None else await scripts.signature(serial, kept[1])
            health = health_json(kept[1], kept[0].pending, signed)
        shown = [visit_json(raw) for raw in visits]
    except (HsmError, LookupError) as error:
        raise ApiError(
            503, "not_available", f"the record book cannot be opened ({type(error).__name__})"
        ) from None
    except RecordFormatError:
        raise ApiError(503, "not_available", "the centre's copy is unreadable") from None
    answer = {
        "card_no": mask_pan(card_no),
        "consent_until": _from_micros(consent.until_us, now.tzinfo),
        "health": health,
        "visits": shown,
    }
    return web.json_response(answer, headers={"Cache-Control": "no-store"})

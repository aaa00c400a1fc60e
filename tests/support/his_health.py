"""A HIS's health data update (PUT /his/v1/cards/{card_no}/health) for tests: the body, the
call, and the clear forms of its chronic conditions no database file may hold."""

from __future__ import annotations

from typing import Any

from tests.support.card_book import his_call

HEALTH = {
    "blood_type": "O+",
    "organ_donor": "donor",
    "emergency_phone": "13800138000",
    "allergies": ["PCN"],
    "implants": ["PM"],
    "chronic_conditions": ["E11.9", "I10"],
}
CLEAR_FORMS = (b"E11.9", b"E119")


def put_health(
    port: int, institution: str, token: str, card_no: str, body: Any
) -> tuple[int, dict[str, Any]]:
    status, answer = his_call(port, institution, token, "PUT", f"/cards/{card_no}/health", body)
    return status, dict(answer)

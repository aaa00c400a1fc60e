"""A HIS's health data update (PUT /his/v1/cards/{card_no}/health) for tests: the body, the
call, and the clear forms of its chronic conditions no database file may hold."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

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
    credentials = base64.b64encode(f"{institution}:{token}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/his/v1/cards/{card_no}/health",
        json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": "Basic " + credentials},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())

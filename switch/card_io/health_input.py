"""A cardholder's health data as people send them — the HIS API's ``PUT …/health`` body, a line
of the issuance health file (`medswitch cards issue --health FILE`) — checked field by field
into EF 0019's layout (messages.card_records.HealthData, specs/card-layout.md).

Fields (every one optional): ``blood_type`` (``A+`` … ``O-``, ``""`` unknown), ``organ_donor``
(``not_recorded`` | ``donor`` | ``not_donor``), ``emergency_phone`` (up to 16 digits),
``allergies`` and ``implants`` (lists of short codes), ``chronic_conditions`` (a list of up to 4
ICD-10 codes). A value that does not fit is a :class:`HealthFieldError` naming its field.

>>> health_of({"blood_type": "O+", "chronic_conditions": ["E11.9"]}, "centre",
...           "20261207093000").chronic
('E11.9',)
>>> try:
...     health_of({"allergies": "PCN"}, "centre", "20261207093000")
... except HealthFieldError as error:
...     print(error.field, "|", error)
allergies | allergies: a list of strings
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from messages.card_records import (
    BLOOD_TYPES,
    DONOR_NO,
    DONOR_UNKNOWN,
    DONOR_YES,
    HealthData,
    RecordFormatError,
)

DONOR = {"not_recorded": DONOR_UNKNOWN, "donor": DONOR_YES, "not_donor": DONOR_NO}
FIELDS = (
    "blood_type", "organ_donor", "emergency_phone", "allergies", "implants", "chronic_conditions",
)  # fmt: skip
HOLDER_FIELD = "cardholder_id"  # the issuance health file's key of each line


class HealthFieldError(ValueError):
    """A field that does not fit the card's health file: ``field`` names it ("" the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def _strings(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HealthFieldError(name, "a list of strings")
    return tuple(value)


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise HealthFieldError(name, "a string")
    return value


def _checked(name: str, health: HealthData) -> None:
    """Encode with only ``name`` set to its value: the layout's complaint is about it."""
    try:
        health.encode()
    except RecordFormatError as bad:
        reason = str(bad).split(": ", 1)[-1]
        raise HealthFieldError(name, reason) from None


def health_of(
    body: Mapping[str, Any], updated_by: str, updated_at: str, *, extra: tuple[str, ...] = ()
) -> HealthData:
    """The body's health data as EF 0019 will hold it (bytes 72-86: ``updated_by`` and
    ``updated_at``, yyyymmddhhmmss). ``extra``: other keys the body may carry."""
    unknown = sorted(set(body) - set(FIELDS) - set(extra))
    if unknown:
        raise HealthFieldError(unknown[0], "unknown field")
    donor = _text(body, "organ_donor") or "not_recorded"
    if donor not in DONOR:
        raise HealthFieldError("organ_donor", ", ".join(DONOR))
    blood = _text(body, "blood_type")
    if blood not in BLOOD_TYPES:
        raise HealthFieldError("blood_type", f"one of {', '.join(BLOOD_TYPES[1:])} or none")
    empty = HealthData("", (), (), "", DONOR_UNKNOWN, (), updated_by, updated_at)
    _checked("updated_by", empty)
    phone = _text(body, "emergency_phone")
    allergies, implants = _strings(body, "allergies"), _strings(body, "implants")
    chronic = _strings(body, "chronic_conditions")
    # one field at a time, so that the layout's complaint names it
    _checked("emergency_phone", replace(empty, emergency_phone=phone))
    _checked("allergies", replace(empty, allergies=allergies))
    _checked("implants", replace(empty, implants=implants))
    _checked("chronic_conditions", replace(empty, chronic=chronic))
    return HealthData(
        blood, allergies, implants, phone, DONOR[donor], chronic, updated_by, updated_at
    )


class HealthLine(NamedTuple):
    line: int  # 1-based, in the file
    cardholder_id: str
    health: HealthData


def read_health_file(text: str, updated_by: str, updated_at: str) -> list[HealthLine]:
    """The issuance health file: UTF-8 JSON lines, one object a cardholder —
    ``{"cardholder_id": "P0000001", "blood_type": "O+", …}`` with the fields above; blank lines
    skipped. ValueError ``line N: FIELD: why`` for the first that does not fit, or a cardholder
    given twice."""
    found: list[HealthLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"line {number}: not a JSON object ({error.msg})") from None
        if not isinstance(body, dict):
            raise ValueError(f"line {number}: not a JSON object")
        holder = body.get(HOLDER_FIELD)
        if not isinstance(holder, str) or not holder:
            raise ValueError(f"line {number}: {HOLDER_FIELD}: the cardholder's id, a string")
        if holder in seen:
            raise ValueError(f"line {number}: {HOLDER_FIELD}: {holder} again (line {seen[holder]})")
        seen[holder] = number
        try:
            health = health_of(body, updated_by, updated_at, extra=(HOLDER_FIELD,))
        except HealthFieldError as error:
            raise ValueError(f"line {number}: {error}") from None
        found.append(HealthLine(number, holder, health))
    return found

"""Read-only views for operators: bills (the HIS's, with their shares) and cards (status, key
version, cardholder id) — card numbers masked (first 6, last 4) in everything returned."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger import schema
from ledger.medical import tables
from messages.pretty import mask_pan
from switch.estate.common import NotFound, limit_of

MB = tables.medical_bills
C = schema.cards


@dataclass(frozen=True, slots=True)
class Bill:
    bill_id: str
    institution_id: str
    his_bill_no: str
    card: str  # masked
    person_id: str
    service_date: str
    state: str
    eligible_fen: int
    pooled_fen: int
    personal_account_fen: int
    self_pay_fen: int
    created_at_us: int
    items: int = 0  # lines of the bill (show only)

    def as_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


_BILL_COLUMNS = (MB.c.bill_id, MB.c.institution_id, MB.c.his_bill_no, MB.c.card_no,
                 MB.c.person_id, MB.c.service_date, MB.c.state, MB.c.d_eligible_fen,
                 MB.c.d_pooled_fen, MB.c.d_personal_account_fen, MB.c.d_self_pay_fen,
                 MB.c.created_at_us)


def _bill(row: Any, items: int = 0) -> Bill:
    return Bill(row[0], row[1], row[2], mask_pan(row[3]), row[4], str(row[5]), row[6],
                int(row[7]), int(row[8]), int(row[9]), int(row[10]), int(row[11]), items)


def list_bills(
    engine: Any, *, institution: str | None = None, state: str | None = None,
    card: str | None = None, limit: int = 50,
) -> list[Bill]:
    query = sa.select(*_BILL_COLUMNS).order_by(MB.c.created_at_us.desc()).limit(limit_of(limit))
    if institution:
        query = query.where(MB.c.institution_id == institution)
    if state:
        query = query.where(MB.c.state == state)
    if card:
        query = query.where(MB.c.card_no == card)
    with engine.connect() as connection:
        return [_bill(row) for row in connection.execute(query)]


def show_bill(engine: Any, bill_id: str) -> Bill:
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(*_BILL_COLUMNS, MB.c.bill_json).where(MB.c.bill_id == bill_id)
        ).first()
    if row is None:
        raise NotFound(f"no bill {bill_id}")
    try:
        items = len(json.loads(row[12]).get("items", []))
    except (ValueError, AttributeError):
        items = 0
    return _bill(row, items)


@dataclass(frozen=True, slots=True)
class Card:
    card: str  # masked
    application_serial: str
    cardholder_id: str
    key_version: int
    status: str
    expiry: str
    replaced_by: str | None  # masked

    def as_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


_CARD_COLUMNS = (C.c.card_no, C.c.application_serial, C.c.cardholder_id, C.c.key_version,
                 C.c.status, C.c.expiry, C.c.replaced_by)


def _card(row: Any) -> Card:
    replaced = None if row[6] is None else mask_pan(row[6])
    return Card(mask_pan(row[0]), row[1], row[2], int(row[3]), row[4], str(row[5]), replaced)


def list_cards(
    engine: Any, *, status: str | None = None, cardholder: str | None = None, limit: int = 50
) -> list[Card]:
    query = sa.select(*_CARD_COLUMNS).order_by(C.c.card_no).limit(limit_of(limit))
    if status:
        query = query.where(C.c.status == status)
    if cardholder:
        query = query.where(C.c.cardholder_id == cardholder)
    with engine.connect() as connection:
        return [_card(row) for row in connection.execute(query)]


def show_card(engine: Any, card: str) -> Card:
    """By card number or application serial."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(*_CARD_COLUMNS).where(
            sa.or_(C.c.card_no == card, C.c.application_serial == card.upper())
        )).first()
    if row is None:
        raise NotFound("no such card")
    return _card(row)

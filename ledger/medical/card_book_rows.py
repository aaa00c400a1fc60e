"""The centre's copy of a person's record book as issuance reads and writes it
(specs/card-layout.md, "The centre's copy"; `medswitch cards issue|personalize|activate`): on
any engine (SQLite or PostgreSQL), outside the daemon.

- the person's newest visit records, across every card of theirs (a replacement card is
  written with them): rows of ``card_visits`` as kept, sealed;
- the person's health data (``card_health``): read, kept (initial health data given at issuance,
  pending until a card is written with them), and marked written (``pending`` false) only while
  the row is the one the card was written from.

Opening and sealing are the caller's, with ledger.personal's keys and
ledger.medical.card_copies' contexts: nothing here sees a record in clear.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ledger.medical.card_copies import HealthCopy, VisitCopy
from ledger.medical.tables import card_health, card_visits
from ledger.schema import cards

VISITS_ON_A_CARD = 10  # EF 001A's records


def person_visits(engine: Any, person_id: str, limit: int = VISITS_ON_A_CARD) -> list[VisitCopy]:
    """The person's newest ``limit`` visit copies (of any card of theirs), oldest first."""
    v = card_visits.c
    query = (
        sa.select(v.bill_id, v.application_serial, v.sealed, v.key_version, v.written_at_us)
        .join(cards, cards.c.application_serial == v.application_serial)
        .where(cards.c.cardholder_id == person_id)
        .order_by(v.written_at_us.desc(), v.bill_id.desc())
        .limit(limit)
    )
    with engine.connect() as db:
        rows = db.execute(query).all()
    found = [VisitCopy(str(r[0]), str(r[1]), bytes(r[2]), int(r[3]), int(r[4])) for r in rows]
    return found[::-1]


def person_health(engine: Any, person_id: str) -> HealthCopy | None:
    h = card_health.c
    query = sa.select(
        h.person_id, h.sealed, h.key_version, h.updated_by, h.updated_at_us, h.pending
    ).where(h.person_id == person_id)
    with engine.connect() as db:
        row = db.execute(query).first()
    if row is None:
        return None
    return HealthCopy(
        str(row[0]), bytes(row[1]), int(row[2]), str(row[3]), int(row[4]), bool(row[5])
    )


def keep_health(engine: Any, copy: HealthCopy) -> None:
    """Write (or replace) the person's health data."""
    values = copy._asdict()
    with engine.begin() as db:
        done = db.execute(
            sa.update(card_health).where(card_health.c.person_id == copy.person_id).values(values)
        ).rowcount
        if not done:
            db.execute(sa.insert(card_health).values(values))


def health_written(engine: Any, person_id: str, updated_at_us: int) -> bool:
    """``pending`` false for the person's health data, if they are still those of
    ``updated_at_us`` (a newer update stays pending); whether it was marked."""
    h = card_health.c
    with engine.begin() as db:
        done = db.execute(
            sa.update(card_health)
            .where(h.person_id == person_id, h.updated_at_us == updated_at_us)
            .values(pending=False)
        ).rowcount
    return bool(done)

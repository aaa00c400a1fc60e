"""The sandbox's record book — TEST ONLY: the first sandbox card is issued with demo health data
(EF 0019, written with its data check code under the card's record key, as `cards personalize`
writes data given at issuance), and the centre keeps its sealed copy (``card_health``, updated
by ``centre``, not pending): a POS's `book` after the PIN shows them, the HIS's reads find them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from hsm.interface import Hsm
from ledger.events.common import CENTRE
from ledger.medical.card_book_rows import keep_health
from ledger.medical.card_copies import HealthCopy, health_context
from messages.card_records import HealthData
from switch.card_io.health_input import health_of
from switch.key_home import Home, personal_keys

#: The first sandbox card's health data (TEST ONLY, as the HIS API's body would give them).
DEMO_HEALTH = {
    "blood_type": "A+",
    "organ_donor": "donor",
    "emergency_phone": "13800138000",
    "allergies": ["PCN"],
    "chronic_conditions": ["I10"],
}


def demo_health(now: dt.datetime) -> HealthData:
    return health_of(DEMO_HEALTH, CENTRE, now.strftime("%Y%m%d%H%M%S"))


async def keep_copy(
    hsm: Hsm, home: Home, database: Path, cardholder_id: str, health: HealthData, now: dt.datetime
) -> None:
    """The centre's copy of what the card was written with: sealed, not pending."""
    keys = await personal_keys(hsm, home.store)
    sealed = await keys.seal_value(health_context(cardholder_id), health.encode())
    at_us = int(now.timestamp() * 1_000_000)
    copy = HealthCopy(cardholder_id, sealed.sealed, sealed.key_version, CENTRE, at_us, False)
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        keep_health(engine, copy)
    finally:
        engine.dispose()

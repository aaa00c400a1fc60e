"""Health data from the HIS (issue 24 item 3, first half), through the real daemon's HTTP API on
SQLite and PostgreSQL: a hospital's ``PUT /his/v1/cards/{card_no}/health`` is kept sealed and
pending (it opens to the bytes EF 0019 will hold); a pharmacy's is refused 403 and reviewed;
data that do not fit the card's layout are 400; without the centre's personal-data key, 503;
and on SQLite no chronic condition appears in clear in the database's files."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from ledger.medical.card_copies import VisitCopies
from messages.card_records import DONOR_YES, HealthData
from switch.key_home import personal_keys
from tests.support.card_book import centre_personal_keys
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.his_health import CLEAR_FORMS, HEALTH, put_health


def test_a_hospital_updates_health_data_and_a_pharmacy_is_refused(
    tmp_path: Path, backend: str
) -> None:
    async def scenario(daemon: Daemon) -> None:
        card_no, serial, person = daemon.sql(
            "SELECT card_no, application_serial, cardholder_id FROM cards ORDER BY card_no LIMIT 1"
        )[0]
        hospital = daemon.sql("SELECT id FROM institutions WHERE kind = 'hospital' ORDER BY id")[0][
            0
        ]
        pharmacy = daemon.sql("SELECT id FROM institutions WHERE kind = 'pharmacy' ORDER BY id")[0][
            0
        ]
        assert daemon.app.stores is not None
        reference = daemon.app.stores.reference
        micros = int(now().timestamp() * 1_000_000)
        tokens = {i: reference.issue_credential(i, micros) for i in (hospital, pharmacy)}
        port = daemon.app.http_port

        def put(institution: str, body: Any, card: str = card_no) -> tuple[int, dict[str, Any]]:
            return put_health(port, institution, tokens[institution], card, body)

        # No personal-data key yet: nothing can be kept.
        status, answer = await asyncio.to_thread(put, hospital, HEALTH)
        assert (status, answer["error"]["code"]) == (503, "not_available"), answer
        await centre_personal_keys(daemon)

        status, answer = await asyncio.to_thread(put, hospital, HEALTH)
        assert status == 202, answer
        assert answer["status"] == "pending" and answer["updated_by"] == hospital
        assert card_no not in json.dumps(answer)  # masked
        rows = daemon.sql("SELECT person_id, updated_by, pending, sealed FROM card_health")
        assert [(r[0], r[1], bool(r[2])) for r in rows] == [(person, hospital, True)]
        assert not [form for form in CLEAR_FORMS if form in bytes(rows[0][3])]
        copies = VisitCopies(
            daemon.app.medical_store, partial(personal_keys, daemon.hsm, daemon.store)
        )
        kept = await copies.health(person)
        assert kept is not None
        health = HealthData.decode(kept[1])
        assert health.chronic == ("E11.9", "I10") and health.blood_type == "O+"
        assert health.donor == DONOR_YES and health.updated_by == hospital

        # A pharmacy may not: 403, reviewed, nothing changed.
        status, answer = await asyncio.to_thread(put, pharmacy, {"blood_type": "A-"})
        assert (status, answer["error"]["code"]) == (403, "not_authorised"), answer
        reviews = daemon.sql(
            "SELECT reference FROM review_items WHERE reason = 'health_update_refused'"
        )
        assert reviews == [(f"institution|{pharmacy}|card|{serial}",)]
        assert daemon.sql("SELECT updated_by FROM card_health") == [(hospital,)]

        # What does not fit the card's file, and an unknown card.
        for bad in ({"blood_type": "C+"}, {"chronic_conditions": ["E11.9"] * 5}, {"x": 1}, []):
            status, answer = await asyncio.to_thread(put, hospital, bad)
            assert (status, answer["error"]["code"]) == (400, "invalid_request"), (bad, answer)
        status, answer = await asyncio.to_thread(put, hospital, HEALTH, "9" * 16)
        assert (status, answer["error"]["code"]) == (422, "unknown_card"), answer

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=3, backend=backend) as daemon:
            await scenario(daemon)
            if backend == "sqlite":
                files = [tmp_path / "medswitch.db", tmp_path / "medswitch.db-wal"]
                written = b"".join(p.read_bytes() for p in files if p.exists())
                assert b"health_update_refused" in written  # the review's words: bytes are read
                assert not [form for form in CLEAR_FORMS if form in written]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))

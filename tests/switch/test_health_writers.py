"""Per-institution authorisation to write health data (issue 24, specs/card-layout.md "Health data
from an institution"), through the real daemon's HIS API, the `medswitch institutions` commands
and the admin API, on SQLite and PostgreSQL: by default a hospital may and a pharmacy may not; a
pharmacy authorised by command may; a hospital revoked through the admin API is refused 403 and
reviewed as any other; each change is audited and shown by `institutions show|list`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from tests.support.card_book import centre_personal_keys
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.estate_cli import cli, database_of, ok
from tests.support.his_health import HEALTH, put_health
from tests.support.operators import enrol


def test_authorise_and_revoke_health_writers(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        await centre_personal_keys(daemon)
        db = database_of(daemon)
        maker = await asyncio.to_thread(enrol, db, tmp_path / "tokens", "mia", "maker")
        card_no, serial = daemon.sql(
            "SELECT card_no, application_serial FROM cards ORDER BY card_no LIMIT 1"
        )[0]
        hospital = daemon.sql("SELECT id FROM institutions WHERE kind = 'hospital' ORDER BY id")
        pharmacy = daemon.sql("SELECT id FROM institutions WHERE kind = 'pharmacy' ORDER BY id")
        hospital_id, pharmacy_id = hospital[0][0], pharmacy[0][0]
        assert daemon.app.stores is not None
        micros = int(now().timestamp() * 1_000_000)
        tokens = {
            i: daemon.app.stores.reference.issue_credential(i, micros)
            for i in (hospital_id, pharmacy_id)
        }

        async def put(institution: str) -> tuple[int, dict[str, Any]]:
            return await asyncio.to_thread(
                put_health, daemon.app.http_port, institution, tokens[institution], card_no, HEALTH
            )

        def refused() -> list[str]:
            rows = daemon.sql(
                "SELECT reference FROM review_items WHERE reason = 'health_update_refused'"
                " ORDER BY reference"
            )
            return [str(row[0]) for row in rows]

        # The defaults: a hospital may, a pharmacy may not (403, reviewed).
        listed = json.loads(ok(await cli(db, maker, "institutions", "list", "--json")))
        writers = {row["institution_id"]: row["health_writer"] for row in listed}
        assert writers[hospital_id] is True and writers[pharmacy_id] is False
        assert not any(writers[row["institution_id"]] for row in listed
                       if row["kind"] not in ("hospital",))  # fmt: skip
        assert (await put(pharmacy_id))[0] == 403
        assert refused() == [f"institution|{pharmacy_id}|card|{serial}"]

        # The pharmacy authorised by command: its data are kept.
        shown = ok(await cli(db, maker, "institutions", "authorise-health", pharmacy_id))
        assert "health writer" in shown and pharmacy_id in shown
        again = await cli(db, maker, "institutions", "authorise-health", pharmacy_id)
        assert again.exit_code != 0 and "already authorised" in again.output
        status, answer = await put(pharmacy_id)
        assert status == 202 and answer["updated_by"] == pharmacy_id, answer
        assert daemon.sql("SELECT updated_by FROM card_health") == [(pharmacy_id,)]

        # The hospital revoked through the admin API: refused and reviewed as any other.
        base = f"http://127.0.0.1:{daemon.app.http_port}/admin/v1/institutions/{hospital_id}"
        bearer = {"Authorization": "Bearer " + maker.read_text().strip()}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/revoke-health", headers=bearer) as reply:
                assert reply.status == 200
                assert (await reply.json())["health_writer"] is False
            async with http.post(f"{base}/revoke-health", headers=bearer) as reply:
                assert reply.status == 400
                assert "already not authorised" in (await reply.json())["error"]
        status, answer = await put(hospital_id)
        assert (status, answer["error"]["code"]) == (403, "not_authorised"), answer
        assert f"institution|{hospital_id}|card|{serial}" in refused()
        assert "health writer" not in ok(await cli(db, maker, "institutions", "show", hospital_id))

        audited = daemon.sql(
            "SELECT actor, action, subject FROM audit_log WHERE action LIKE '%-health' ORDER BY seq"
        )
        assert [tuple(row) for row in audited] == [
            ("mia", "institutions.authorise-health", pharmacy_id),
            ("mia", "institutions.revoke-health", hospital_id),
        ]

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=3, backend=backend) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))

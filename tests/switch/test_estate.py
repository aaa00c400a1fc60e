"""The estate by command against a running daemon (issue 19): `medswitch terminals disable`
makes the terminal's very next message 97 and `enable` brings it back; a new parameter version
reaches the terminal at its next download (institution, then group); the blacklist by command
reaches a POS's blacklist download; the admin API does the same under an operator's token;
every change is in the audit log under the authenticated operator; roles are enforced."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from click.testing import CliRunner

from messages.terminal import (
    BlacklistDownload,
    BlacklistReply,
    Echo,
    ParameterDownload,
    ParameterReply,
    SignOn,
    SignOnReply,
)
from switch.cli import main
from tests.support.daemon import INSTITUTION, Daemon, Terminal, now, running_daemon
from tests.support.estate_cli import cli, database_of, ok
from tests.support.operators import enrol

TERMINALS = {"POS00001": "pos", "POS00002": "pos"}


async def sign_on(terminal: Terminal) -> None:
    terminal.keys = None  # the reply is MACed under the keys it issues
    reply = await terminal.exchange(SignOn(**terminal.envelope()), mac=False)
    assert isinstance(reply, SignOnReply) and reply.keys is not None, reply.response_code
    terminal.keys = await terminal.hsm.accept_sign_on(
        terminal.tmk, reply.keys.build(), f"pos/{terminal.terminal_id}", now=now()
    )
    terminal.batch = reply.batch


async def parameters_of(terminal: Terminal) -> Any:
    reply = await terminal.exchange(ParameterDownload(**terminal.envelope()))
    assert isinstance(reply, ParameterReply) and reply.parameters is not None
    return reply.parameters


def run(tmp_path: Path, scenario: Any, backend: str = "sqlite") -> None:
    async def main_() -> None:
        async with running_daemon(tmp_path, TERMINALS, backend=backend) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main_(), timeout=120))


def audit_rows(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT actor, action, subject FROM audit_log ORDER BY seq"
        ).fetchall()


def test_a_disabled_terminal_gets_97_at_once_and_enabled_serves_again(
    tmp_path: Path, backend: str
) -> None:
    seen: list[tuple[str, str, str]] = []

    async def scenario(daemon: Daemon) -> None:
        db = database_of(daemon)
        maker = await asyncio.to_thread(enrol, db, tmp_path / "tokens", "mia", "maker")
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
            ok(await cli(db, maker, "terminals", "disable", "POS00001"))
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "97"
            refused = await pos.exchange(SignOn(**pos.envelope()), mac=False)
            assert refused.response_code == "97"
            ok(await cli(db, maker, "terminals", "enable", "POS00001"))
            await sign_on(pos)
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
            # An institution disabled: its terminals are refused too.
            ok(await cli(db, maker, "institutions", "disable", INSTITUTION))
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "97"
            ok(await cli(db, maker, "institutions", "enable", INSTITUTION))
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
        seen.extend(daemon.sql("SELECT actor, action, subject FROM audit_log ORDER BY seq"))

    run(tmp_path, scenario, backend)
    actions = [(actor, action) for actor, action, _ in seen]
    assert ("mia", "terminals.disable") in actions
    assert ("mia", "terminals.enable") in actions
    assert ("mia", "institutions.disable") in actions


def test_a_new_parameter_version_at_the_next_download(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        db = database_of(daemon)
        maker = await asyncio.to_thread(enrol, db, tmp_path / "tokens", "mia", "maker")
        async with daemon.terminal("POS00001") as pos, daemon.terminal("POS00002") as other:
            await sign_on(pos)
            await sign_on(other)
            first = await parameters_of(pos)
            assert first.parameters_version is None and first.offline_floor_fen == 20_000
            out = ok(await cli(
                db, maker, "parameters", "set", "--institution", INSTITUTION, "--floor-fen",
                "30000", "--count-max", "40", "--age-max-h", "48", "--categories",
                "employed=在职\\nretired=退休\\nfree=离休", "--json",
            ))
            version = json.loads(out)["version"]
            second = await parameters_of(pos)
            assert second.parameters_version == version
            assert (second.offline_floor_fen, second.offline_count_max) == (30_000, 40)
            assert second.offline_age_max_h == 48 and "free=离休" in second.categories
            # A group's version is narrower than the institution's: only its terminals get it.
            ok(await cli(db, maker, "terminals", "move", "POS00002", "--group", "night"))
            out = ok(await cli(db, maker, "parameters", "set", "--group", "night",
                               "--floor-fen", "0", "--count-max", "0", "--age-max-h", "1",
                               "--json"))
            night = json.loads(out)["version"]
            assert (await parameters_of(other)).parameters_version == night
            assert (await parameters_of(other)).offline_floor_fen == 0
            assert (await parameters_of(pos)).parameters_version == version
            shown = ok(await cli(db, maker, "terminals", "show", "POS00002"))
            assert f"next parameter download: version {night}" in shown

    run(tmp_path, scenario, backend)


def test_blacklist_by_command_reaches_the_pos(tmp_path: Path) -> None:
    db = tmp_path / "medswitch.db"

    async def scenario(daemon: Daemon) -> None:
        maker = await asyncio.to_thread(enrol, db, tmp_path / "tokens", "mia", "maker")
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            out = ok(await cli(db, maker, "blacklist", "add", "00112233445566778899",
                               "--reason", "fraud", "--note", "skimmed", "--json"))
            added = json.loads(out)
            assert added["reason"] == "fraud" and added["note"] == "skimmed"
            reply = await pos.exchange(BlacklistDownload(**pos.envelope(), from_version="00000000"))
            assert isinstance(reply, BlacklistReply) and reply.blacklist is not None
            assert reply.blacklist.version == added["version"]
            assert reply.blacklist.entries == (("A", bytes.fromhex("00112233445566778899")),)
            refused = await cli(db, maker, "blacklist", "remove", "00112233445566778899")
            assert refused.exit_code != 0 and "--note" in refused.output
            ok(await cli(db, maker, "blacklist", "remove", "00112233445566778899",
                         "--note", "card recovered"))
            after = await pos.exchange(BlacklistDownload(
                **pos.envelope(), from_version=f"{added['version']:08d}"))
            assert isinstance(after, BlacklistReply) and after.blacklist is not None
            assert after.blacklist.entries == (("D", bytes.fromhex("00112233445566778899")),)
            listing = ok(await cli(db, maker, "blacklist", "list", "--all"))
            assert f"removed in version {added['version'] + 1}" in listing

    run(tmp_path, scenario)


def test_admin_api_disables_at_once_under_a_token_with_roles(tmp_path: Path) -> None:
    db = tmp_path / "medswitch.db"

    async def scenario(daemon: Daemon) -> None:
        tokens = tmp_path / "tokens"
        maker = await asyncio.to_thread(enrol, db, tokens, "mia", "maker")
        auditor = await asyncio.to_thread(enrol, db, tokens, "avery", "auditor")
        base = f"http://127.0.0.1:{daemon.app.http_port}/admin/v1"

        def bearer(token: Path) -> dict[str, str]:
            return {"Authorization": "Bearer " + token.read_text().strip()}

        async with aiohttp.ClientSession() as http, daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            async with http.get(f"{base}/terminals") as answer:
                assert answer.status == 401
            async with http.get(f"{base}/terminals", headers=bearer(auditor)) as answer:
                assert answer.status == 200
                listed = await answer.json()
                assert {t["terminal_id"] for t in listed} == set(TERMINALS)
            async with http.post(f"{base}/terminals/POS00001/disable",
                                 headers=bearer(auditor)) as answer:
                assert answer.status == 403
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "00"
            async with http.post(f"{base}/terminals/POS00001/disable",
                                 headers=bearer(maker)) as answer:
                assert answer.status == 200 and (await answer.json())["status"] == "disabled"
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "97"
            async with http.get(f"{base}/terminals/NOPE0000", headers=bearer(maker)) as answer:
                assert answer.status == 404
            body = {"terminal_id": "POS00003", "institution_id": INSTITUTION, "kind": "pos"}
            async with http.post(f"{base}/terminals", json=body, headers=bearer(maker)) as answer:
                assert answer.status == 200
            async with http.post(f"{base}/terminals", json=body, headers=bearer(maker)) as answer:
                assert answer.status == 400 and "exists" in (await answer.json())["error"]
            async with http.post(f"{base}/terminals", data=b"[", headers=bearer(maker)) as answer:
                assert answer.status == 400 and "not JSON" in (await answer.json())["error"]
            limits = {"institution": INSTITUTION, "floor_fen": 123, "count_max": 4,
                      "age_max_h": 5}
            async with http.post(f"{base}/parameters", json=limits,
                                 headers=bearer(maker)) as answer:
                assert answer.status == 200
                version = (await answer.json())["version"]
            async with http.post(f"{base}/parameters", json={**limits, "floor_fen": "many"},
                                 headers=bearer(maker)) as answer:
                assert answer.status == 400 and "floor_fen" in (await answer.json())["error"]
            entry = {"card": "00112233445566778899", "reason": "stolen", "note": "police"}
            async with http.post(f"{base}/blacklist", json=entry, headers=bearer(maker)) as answer:
                assert answer.status == 200
            async with http.get(f"{base}/blacklist", headers=bearer(auditor)) as answer:
                listed_now = await answer.json()
                assert listed_now["version"] == 1
                assert listed_now["entries"][0]["reason"] == "stolen"
            # The rest of the estate, read by the auditor as the console would.
            for path, member, expected in (
                ("institutions", "institution_id", INSTITUTION), ("psams", None, None),
                ("cards", None, None), ("bills", None, None), ("parameters", "version", version),
            ):
                async with http.get(f"{base}/{path}", headers=bearer(auditor)) as answer:
                    assert answer.status == 200, path
                    rows = await answer.json()
                    assert isinstance(rows, list), path
                    assert member is None or expected in {row[member] for row in rows}, path
            async with http.get(f"{base}/institutions/{INSTITUTION}",
                                headers=bearer(auditor)) as answer:
                assert (await answer.json())["institution_id"] == INSTITUTION
            async with http.get(f"{base}/parameters/{version}", headers=bearer(auditor)) as answer:
                assert (await answer.json())["floor_fen"] == 123
            for verb in ("disable", "enable"):  # an institution's status, by the maker
                async with http.post(f"{base}/institutions/{INSTITUTION}/{verb}",
                                     headers=bearer(maker)) as answer:
                    assert answer.status == 200, await answer.text()
        async with daemon.terminal("POS00003") as new:
            await sign_on(new)  # registered through the API: served without a restart
            got = await parameters_of(new)
            assert (got.parameters_version, got.offline_floor_fen) == (version, 123)

    run(tmp_path, scenario)
    assert ("mia", "terminals.add", "POS00003") in audit_rows(db)
    assert ("mia", "institutions.disable", INSTITUTION) in audit_rows(db)


def test_roles_and_refusals_by_command(tmp_path: Path) -> None:
    db = tmp_path / "medswitch.db"

    async def scenario(daemon: Daemon) -> None:
        tokens = tmp_path / "tokens"
        maker = await asyncio.to_thread(enrol, db, tokens, "mia", "maker")
        auditor = await asyncio.to_thread(enrol, db, tokens, "avery", "auditor")
        refused = await cli(db, auditor, "terminals", "disable", "POS00001")
        assert refused.exit_code == 1 and "lacks the role maker" in refused.output
        assert "POS00001" in ok(await cli(db, auditor, "terminals", "list"))
        out = await cli(db, maker, "terminals", "add", "POS0001", "--institution", INSTITUTION,
                        "--kind", "pos")
        assert out.exit_code == 1 and "8 letters or digits" in out.output
        out = await cli(db, maker, "terminals", "move", "POS00001", "--institution", "nowhere")
        assert out.exit_code == 1 and "no institution nowhere" in out.output
        ok(await cli(db, maker, "institutions", "add", "h9", "--kind", "hospital", "--name",
                     "Ninth", "--level", "2"))
        moved = ok(await cli(db, maker, "terminals", "move", "POS00001", "--institution", "h9"))
        assert " h9 " in moved
        nobody = await asyncio.to_thread(
            CliRunner().invoke, main, ["terminals", "list", "--db", str(db)],
            env={"MEDSWITCH_OPERATOR_TOKEN_FILE": str(tmp_path / "none.token")},
        )
        assert nobody.exit_code == 1 and "operators login" in nobody.output

    run(tmp_path, scenario)

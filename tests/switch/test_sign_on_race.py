"""Sign-ons of one terminal arriving at once (found by bench/bench_fuzz.py), against
`medswitch serve` on a demo home, whose session keys live in its database: each sign-on gets
keys of a version of its own. Before, sign-ons that read the newest version together were all
given the next one: all but one failed to insert (answered 96) and their keys replaced the
winner's in the HSM's key cache, so each request MACed under the winner's keys was answered 96
from then on — a stranger's sign-ons, sent as the real terminal signs on, took it out of
service."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import uvloop

from bench.pos_side import CODEC, Pos, exchange, sign_on, signed
from ledger.demo import init_demo
from messages.terminal import Echo, SignOn
from messages.terminal_table import build, parse
from switch.demo import keys as demo_keys
from switch.demo.keys import demo_personal_keys
from switch.key_home import component_files_of, open_soft_hsm
from tests.support.serve import serving

FORGED = 5  # with the real one: the 6 sign-ons a minute the default limit admits
ROUNDS = 4  # terminals, each signed on with forged sign-ons at once


def _demo(home: Path) -> list[tuple[str, str]]:
    database = home / "medswitch.db"
    init_demo(database, 2, personal=asyncio.run(demo_personal_keys(home)))
    with sqlite3.connect(database) as connection:
        terminals = connection.execute(
            "SELECT id, institution_id FROM terminals WHERE kind = 'pos' ORDER BY id LIMIT ?",
            (ROUNDS,),
        ).fetchall()
    demo_keys.write_test_components(home)
    asyncio.run(demo_keys.provision(home, [t[0] for t in terminals]))
    demo_keys.write_config(home, terminal_port=0, http_port=0)
    return [(t, i.ljust(15)) for t, i in terminals]


async def _forged(port: int, pos: Pos) -> str:
    """An unsigned 0800 for ``pos``'s terminal from a connection of its own."""
    stranger = Pos(pos.terminal_id, pos.institution_id, psam=None)  # type: ignore[arg-type]
    reply = parse(
        CODEC.decode(await exchange(port, CODEC.encode(build(SignOn(**stranger.envelope())))))
    )
    return reply.response_code


def test_sign_ons_at_once_each_get_their_own_keys(tmp_path: Path) -> None:
    terminals = _demo(tmp_path)

    async def main(port: int) -> None:
        hsm = open_soft_hsm(tmp_path, component_files_of(demo_keys.custodian_files(tmp_path)))
        for terminal_id, institution in terminals:
            pos = Pos(terminal_id, institution, psam=None)  # type: ignore[arg-type]
            forged = await asyncio.gather(
                sign_on(port, hsm, pos), *(_forged(port, pos) for _ in range(FORGED))
            )
            assert forged[1:] == ["00"] * FORGED
            assert pos.keys is not None
            for _ in range(3):  # the real terminal's keys serve
                echo = await exchange(port, await signed(hsm, pos.keys, Echo(**pos.envelope())))
                assert parse(CODEC.decode(echo)).response_code == "00", terminal_id

    with serving(tmp_path) as (_, ports):
        uvloop.run(asyncio.wait_for(main(ports.terminal), timeout=60))

"""The daemon on PostgreSQL heals: every backend of its database terminated while kiosk loads
run (as a restart or an operator would), each request is answered 00 or 96 — never 00 for a
write that did not commit — and loads succeed again on new connections; the card's next load
proves every attempt, and the card, its shadow and the personal fund then agree to the fen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from tests.support.daemon import Daemon, running_daemon
from tests.support.kiosk import (
    KIOSK,
    balances,
    card_balance,
    issue_card,
    kiosk_load,
    signed_on_kiosk,
)
from tests.support.pg import fresh_database, terminate_backends

pytestmark = pytest.mark.postgres

LOADS = 10
KILL_AT = (2, 6)  # the loads during which every backend of the daemon is terminated
HEAL_TRIES = 50  # a bounded wait for the daemon to come back
HEAL_PAUSE_S = 0.1


async def _loads(daemon: Daemon, dsn: str) -> None:
    on_file = daemon.first_card()
    conn = await issue_card(daemon, on_file)
    _, _, fund_before = await balances(daemon, on_file.serial, on_file.cardholder_id)
    codes: list[str] = []
    killed = 0
    async with daemon.terminal(KIOSK) as kiosk:
        await signed_on_kiosk(daemon, kiosk)
        for n in range(LOADS):
            killing = asyncio.ensure_future(terminate_backends(dsn)) if n in KILL_AT else None
            reply, confirmation = await kiosk_load(kiosk, conn, on_file, 100 + n)
            codes += [reply.response_code] + (
                [] if confirmation is None else [confirmation.response_code]
            )
            if killing is not None:
                killed += await killing
        assert killed > 0  # the daemon's connections were there to be killed
        assert set(codes) <= {"00", "96"}, codes
        for _ in range(HEAL_TRIES):  # loads succeed again; this one proves every earlier attempt
            reply, confirmation = await kiosk_load(kiosk, conn, on_file, 1_000)
            if confirmation is not None and confirmation.response_code == "00":
                break
            assert reply.response_code in ("00", "96")
            await asyncio.sleep(HEAL_PAUSE_S)
        else:
            raise AssertionError("the daemon did not come back")
    shadow, doubt, fund = await balances(daemon, on_file.serial, on_file.cardholder_id)
    loaded = card_balance(conn)
    assert loaded >= 1_000
    assert (shadow, doubt, fund_before - fund) == (loaded, 0, loaded)


def test_terminated_backends_are_reconnected_and_the_money_agrees(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            fresh_database() as dsn,
            running_daemon(tmp_path, cardholders=2, database_url=dsn) as daemon,
        ):
            await _loads(daemon, dsn)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))

"""The bank killed for a while under traffic, seen from outside (specs/bank-interface.md,
"Store-and-forward" and "Readiness"): two kiosks load their purses from savings (50 loads at
most) while the bank host first debits and drops the line without answering (98; reversals
queued, the bank's answers to them lost), then goes away altogether (91). While it is away
/metrics shows the outbound link down and the queue's depth, /readyz says 503 (`ready_when =
"all"`), and a link failure is logged at warning with the bank, host and port. The daemon is
restarted during the outage: the queue is still there. The bank returns: the queue drains,
/readyz says 200, and nothing is lost or doubled — the bank's debits still standing equal the
loads approved, each reversal applied once, the cards' purses and their shadows agree."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import uvloop

from messages.bank import BankReversal
from messages.private import Purse
from simulators import terminal_card
from simulators.bank import IssuerRules
from tests.support.bank import BANK, BankDaemon, bank_daemon, until
from tests.support.bank_observe import readyz, sample, scrape
from tests.support.kiosk import PIN
from tests.support.kiosk_traffic import KioskTraffic, kiosks_with_cards
from tests.support.scripted_day import cards_on_file

LOADS_MAX = 25  # per kiosk: 50 transactions at most
LOST = 10**6  # reversals whose answers the bank loses while it misbehaves


async def ready_is(bank: BankDaemon, status: int) -> None:
    """Wait, bounded, for /readyz to answer ``status``."""
    for _ in range(200):
        if await readyz(bank.app) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never answered {status}")


async def queued(bank: BankDaemon) -> int:
    rows = await bank.fetch("SELECT count(*) FROM reversal_queue WHERE status = 'queued'")
    return int(rows[0][0])


def test_a_bank_killed_under_traffic_drains_its_queue_when_it_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "medswitch.bank.out")

    async def outage(bank: BankDaemon, traffic: KioskTraffic) -> list[Any]:
        """The traffic through the outage; the cards (their readers' connections)."""
        _, connections, kiosks = await kiosks_with_cards(bank, tmp_path)
        try:
            for kiosk in kiosks:
                await kiosk.sign_on()
            running = asyncio.gather(*(traffic.run(kiosk) for kiosk in kiosks))
            await until(lambda: traffic.codes.count("00") >= 2)
            # Debits, then the line drops unanswered; the answers to reversals are lost.
            bank.issuer.rules = IssuerRules(disconnect=True, drop_reversal_replies=LOST)
            await until(lambda: traffic.codes.count("98") >= 2)
            bank.issuer.rules = IssuerRules(drop_reversal_replies=LOST)
            await bank.issuer.close()  # the bank host goes away
            await until(lambda: traffic.codes.count("91") >= 2)
            traffic.stop.set()
            await asyncio.wait_for(running, timeout=60)
        finally:
            for kiosk in kiosks:
                await kiosk.link.close()
        return connections

    async def scenario(bank: BankDaemon) -> None:
        traffic = KioskTraffic(LOADS_MAX)
        connections = await outage(bank, traffic)
        depth = await queued(bank)
        assert depth >= 1
        samples = await scrape(bank.app)
        outbound = {"bank": BANK, "connection": "outbound"}
        assert sample(samples, "medswitch_bank_link_up", **outbound) == 0
        assert sample(samples, "medswitch_bank_signed_on", **outbound) == 0
        assert sample(samples, "medswitch_saf_depth", bank=BANK) == depth
        assert (sample(samples, "medswitch_saf_oldest_age_seconds", bank=BANK) or 0) > 0
        assert await readyz(bank.app) == 503
        issuer_port = bank.app.config.bank.outbound_port
        failed = f"bank {BANK}: link to 127.0.0.1:{issuer_port} failed"
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(failed in line for line in warnings), warnings

        await bank.restart()  # during the outage: the queue is the database's
        samples = await scrape(bank.app)
        assert sample(samples, "medswitch_saf_depth", bank=BANK) == depth
        assert await readyz(bank.app) == 503

        bank.issuer.rules = IssuerRules()
        await bank.issuer.start(port=issuer_port)  # the bank returns
        await ready_is(bank, 200)
        await until(lambda: set(bank.reversal_statuses()) == {"acknowledged"}, timeout_s=60)
        samples = await scrape(bank.app)
        assert sample(samples, "medswitch_bank_link_up", **outbound) == 1
        assert sample(samples, "medswitch_bank_signed_on", **outbound) == 1
        assert sample(samples, "medswitch_saf_depth", bank=BANK) == 0
        acknowledged = {"bank": BANK, "outcome": "acknowledged"}
        assert sample(samples, "medswitch_bank_reversals_total", **acknowledged) == depth

        assert {"00", "98", "91"} <= set(traffic.codes), traffic.codes
        assert len(traffic.codes) <= 2 * LOADS_MAX
        approved = sum(traffic.approved.values())
        assert sum(bank.issuer.applied.values()) == approved  # debited once, reversed once
        reversed_keys = {
            r.typed.original for r in bank.issuer.received if isinstance(r.typed, BankReversal)
        }
        assert len(reversed_keys) == len(bank.reversal_statuses()) >= 1
        for original in reversed_keys:  # before the restart and after: one F11 and F7 each
            sent = [
                (r.mti, r.typed.stan, r.typed.transmitted)
                for r in bank.issuer.received
                if isinstance(r.typed, BankReversal) and r.typed.original == original
            ]
            assert [mti for mti, *_ in sent] == ["0420"] + ["0421"] * (len(sent) - 1)
            assert len({(stan, transmitted) for _, stan, transmitted in sent}) == 1, sent
        cards = cards_on_file(bank.database, 2)
        for on_file, conn in zip(cards, connections, strict=True):
            shadow, in_doubt, _ = await bank.ep_accounts(on_file.serial)
            terminal_card.open_application(conn, PIN)
            card_ep = terminal_card.balance(conn, Purse.EP)
            expected = traffic.approved.get(on_file.card_no, 0)
            assert (shadow, in_doubt) == (card_ep, 0) == (expected, 0)
        clearing = (await bank.ep_accounts(cards[0].serial))[2]
        assert abs(clearing) == approved

    async def run() -> None:
        settings = {"saf_backoff_initial_s": 0.2, "saf_backoff_max_s": 1.0, "ready_when": "all"}
        async with bank_daemon(tmp_path, **settings) as bank:
            await scenario(bank)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(run(), timeout=180))

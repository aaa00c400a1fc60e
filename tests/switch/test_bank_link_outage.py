"""The bank link killed for a while under traffic, over real sockets: two kiosks load their cards'
purses from savings without pause while the bank host first drops its connections after
debiting (the switch answers 98 and queues reversals), then goes away altogether (91: nothing
sent), then comes back on the same port. Afterwards nothing is lost or doubled: the bank's
savings debits still standing equal the loads the kiosks were approved, the cards' EP balances
and their shadows; nothing is left in doubt; the reversal queue is drained and each reversal
was applied once at the bank."""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvloop

from messages.bank import BankReversal
from messages.private import Purse
from simulators import terminal_card
from simulators.bank import IssuerRules
from tests.support.bank import BankDaemon, bank_daemon, until
from tests.support.kiosk import PIN
from tests.support.kiosk_traffic import KioskTraffic, kiosks_with_cards

ROUNDS_MAX = 400  # loads per kiosk, at most


def test_a_bank_link_killed_under_traffic_loses_and_doubles_nothing(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        cards, connections, kiosks = await kiosks_with_cards(bank, tmp_path)
        traffic = KioskTraffic(ROUNDS_MAX)
        try:
            for kiosk in kiosks:
                await kiosk.sign_on()
            running = asyncio.gather(*(traffic.run(kiosk) for kiosk in kiosks))
            await until(lambda: traffic.codes.count("00") >= 2)
            bank.issuer.rules = IssuerRules(disconnect=True)  # debits, then the line drops
            await until(lambda: "98" in traffic.codes)
            bank.issuer.rules = IssuerRules()
            issuer_port = bank.issuer.port
            await bank.issuer.close()  # the bank host goes away
            await until(lambda: traffic.codes.count("91") >= 2)
            before = traffic.codes.count("00")
            await bank.issuer.start(port=issuer_port)
            await until(lambda: traffic.codes.count("00") >= before + 4, timeout_s=60)
            traffic.stop.set()
            await asyncio.wait_for(running, timeout=60)
            await until(lambda: set(bank.reversal_statuses()) == {"acknowledged"})
        finally:
            for kiosk in kiosks:
                await kiosk.link.close()

        assert {"00", "98", "91"} <= set(traffic.codes), traffic.codes
        approved = sum(traffic.approved.values())
        assert sum(bank.issuer.applied.values()) == approved  # debited once, reversed once
        reversals = [r.typed for r in bank.issuer.received]
        reversed_keys = {r.original for r in reversals if isinstance(r, BankReversal)}
        assert len(reversed_keys) == len(bank.reversal_statuses()) >= 1
        total_shadow = 0
        for on_file, conn in zip(cards, connections, strict=True):
            shadow, in_doubt, _ = await bank.ep_accounts(on_file.serial)
            terminal_card.open_application(conn, PIN)
            card_ep = terminal_card.balance(conn, Purse.EP)
            expected = traffic.approved.get(on_file.card_no, 0)
            assert (shadow, in_doubt) == (card_ep, 0) == (expected, 0)
            total_shadow += shadow
        clearing = (await bank.ep_accounts(cards[0].serial))[2]
        assert abs(clearing) == total_shadow == approved

    async def main() -> None:
        async with bank_daemon(tmp_path, outbound_connections=2) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))

"""Two banks, over real sockets: each its own inbound listener with its own allowed peers and
acquirer id, its own outbound link and keys; kiosk EP loads routed by the card's BIN to the
right bank's savings link (the bank clearing of that bank), and a key change of one bank that
leaves the other's keys alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import uvloop

from ledger.demo import CARD_BIN
from ledger.kinds import AccountKind, account_id
from messages.bank import SavingsDebit
from simulators.bank import BankAcquirer
from simulators.kiosk import Kiosk
from switch.bank.host import bank_configs
from switch.config import BankConfig
from tests.support.bank import BANK, BANK_B, BankDaemon, bank_daemon
from tests.support.daemon import now
from tests.support.kiosk import PIN
from tests.support.scripted_day import cards_on_file, issue_cards, terminal_link

CARD_B_PREFIX = f"{CARD_BIN}000000002"  # the demo's second card: bank B's "BIN"


def debits(issuer: object) -> list[SavingsDebit]:
    return [r.typed for r in issuer.received if isinstance(r.typed, SavingsDebit)]  # type: ignore[attr-defined]


def test_two_banks_each_with_its_links_peers_bins_and_keys(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        app, host = bank.app, bank.bank
        assert [peer.bank_id for peer in host.peers] == [BANK, BANK_B]
        peer_b = host.peer(BANK_B)
        assert peer_b is not None and peer_b.listener is not None and bank.issuer_b is not None
        assert bank.zak_in_b is not None
        card_a, card_b = cards_on_file(bank.database, 2)
        assert card_b.card_no.startswith(CARD_B_PREFIX) and not card_a.card_no.startswith(
            CARD_B_PREFIX
        )
        (conn_a, conn_b), _ = await issue_cards(bank.daemon, [card_a, card_b])
        port = app.terminal_port
        link = await terminal_link(bank.daemon, "K0000001", "centre", tmp_path / "k.json", port, 10)
        kiosk = Kiosk(link, conn_a, pan=card_a.card_no, pin=PIN)
        try:
            await kiosk.sign_on()
            assert (await kiosk.ep_load(1_000))[0].startswith("loaded")
            kiosk.card, kiosk.pan = conn_b, card_b.card_no
            assert (await kiosk.ep_load(2_000))[0].startswith("loaded")
        finally:
            await link.close()
        assert [d.amount_fen for d in debits(bank.issuer)] == [1_000]
        assert [d.amount_fen for d in debits(bank.issuer_b)] == [2_000]
        clearing = await bank.balances(
            account_id(AccountKind.BANK_CLEARING, BANK),
            account_id(AccountKind.BANK_CLEARING, BANK_B),
        )
        assert [abs(c) for c in clearing] == [1_000, 2_000]

        # Bank B's listener admits only its own peer (10.9.9.9): this one gets no answer.
        counter_b = await BankAcquirer.connect(
            "127.0.0.1", peer_b.listener.port, bank.daemon.hsm, bank.zak_in_b, BANK_B, clock=now
        )
        counter_b.timeout_s = 0.5
        try:
            with pytest.raises((TimeoutError, ConnectionError)):
                await counter_b.sign_on()
        finally:
            await counter_b.close()
        # Bank B's acquirer id on bank A's listener is not that link's bank: 03.
        counter = await BankAcquirer.connect(
            "127.0.0.1", app.bank_port, bank.daemon.hsm, bank.zak_in, BANK_B, clock=now
        )
        try:
            assert (await counter.sign_on()).response_code == "03"
        finally:
            await counter.close()

        zak_a, zak_b = bank.issuer.zak, bank.issuer_b.zak
        url = f"http://127.0.0.1:{app.http_port}/bank/{BANK_B}/key-change"
        custodian = await bank.bearer("kim", "key_custodian")
        async with aiohttp.ClientSession() as http, http.post(url, headers=custodian) as response:
            assert response.status == 200
        assert bank.issuer.zak == zak_a and bank.issuer_b.zak.kcv != zak_b.kcv

    async def main() -> None:
        bank_b = {"bins": (CARD_B_PREFIX,), "allowed_peers": ("10.9.9.9",)}
        async with bank_daemon(tmp_path, bank_b=bank_b) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))


def test_two_banks_may_not_share_keys_or_ids() -> None:
    first = BankConfig(enabled=True, links=(BankConfig(enabled=True, acquirer_id="01030000"),))
    with pytest.raises(ValueError, match="share zak_alias"):
        bank_configs(first)
    twice = BankConfig(enabled=True, links=(BankConfig(enabled=True),))
    with pytest.raises(ValueError, match="share acquirer_id"):
        bank_configs(twice)

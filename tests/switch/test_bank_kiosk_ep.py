"""A savings-funded EP load at a kiosk, over real sockets: the kiosk (its own secure module, the
bank PIN under its session PIK) → the switch's terminal interface → the bank's issuer simulator
over the outbound link, and back. Approved (then the TAC), declined (nothing moves), timed out
(98; the late debit reversed once by store-and-forward), and `medswitch sim kiosk`'s ep_load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from messages.bank import SavingsDebit
from messages.private import Purse
from simulators import terminal_card
from simulators.bank import IssuerRules
from simulators.card import VirtualCard
from simulators.kiosk import Kiosk
from simulators.terminal_link import TerminalError
from switch.card_io.connection import DirectConnection
from tests.support.bank import BankDaemon, bank_daemon, until
from tests.support.kiosk import PIN
from tests.support.on_file import first_card
from tests.support.scripted_day import issue_cards, terminal_link
from tests.support.sim import invoke, tmk_file

KIOSK = "K0000001"


def run(tmp: Path, scenario: object, **bank: object) -> None:
    async def main() -> None:
        async with bank_daemon(tmp, **bank) as daemon:  # type: ignore[arg-type]
            await scenario(daemon)  # type: ignore[operator]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))


def test_kiosk_ep_load_approved_declined_and_timed_out(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        daemon = bank.daemon
        on_file = first_card(bank.database)
        (conn,), _ = await issue_cards(daemon, [on_file])
        link = await terminal_link(
            daemon, KIOSK, "centre", tmp_path / "kiosk.json", daemon.app.terminal_port, 10.0
        )
        kiosk = Kiosk(link, conn, pan=on_file.card_no, pin=PIN)
        try:
            await kiosk.sign_on()
            assert (await kiosk.ep_load(20_000)) == ["loaded 200.00: EP now 200.00"]
            debits = [r.typed for r in bank.issuer.received if isinstance(r.typed, SavingsDebit)]
            assert len(debits) == 1 and debits[0].acquirer_id == "09990000"
            assert debits[0].terminal_id == KIOSK
            assert sum(bank.issuer.applied.values()) == 20_000
            shadow, in_doubt, clearing = await bank.ep_accounts(on_file.serial)
            assert (shadow, in_doubt, abs(clearing)) == (20_000, 0, 20_000)

            bank.issuer.rules = IssuerRules(decline_above_fen=1_000)
            with pytest.raises(TerminalError, match="refused: 51 insufficient funds: "):
                await kiosk.ep_load(5_000)
            assert await bank.ep_accounts(on_file.serial) == [shadow, in_doubt, clearing]

            bank.issuer.rules = IssuerRules(delay_s=1.0)  # the bank debits, but too late
            with pytest.raises(TerminalError, match="refused: 98 issuer timeout: "):
                await kiosk.ep_load(3_000)
            await until(lambda: bank.reversal_statuses() == ["acknowledged"])
            reversals = [r.mti for r in bank.issuer.received if r.mti.startswith("04")]
            assert reversals[0] == "0420" and set(reversals[1:]) <= {"0421"}
            assert sum(bank.issuer.applied.values()) == 20_000  # reversed, once
            assert await bank.ep_accounts(on_file.serial) == [shadow, in_doubt, clearing]
            terminal_card.open_application(conn, PIN)
            assert terminal_card.balance(conn, Purse.EP) == 20_000
        finally:
            await link.close()

    run(tmp_path, scenario)


def test_a_pos_may_not_load_from_savings_and_a_bad_pin_block_is_99(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        daemon = bank.daemon
        on_file = first_card(bank.database)
        (conn,), _ = await issue_cards(daemon, [on_file])
        link = await terminal_link(
            daemon, KIOSK, "centre", tmp_path / "kiosk.json", daemon.app.terminal_port, 10.0
        )
        kiosk = Kiosk(link, conn, pan=on_file.card_no, pin=PIN, bank_pin="12")  # too short
        try:
            await kiosk.sign_on()
            with pytest.raises(Exception, match="PIN must be 4 to 12 digits"):
                await kiosk.ep_load(1_000)  # the PIN pad refuses it: nothing sent
            kiosk.bank_pin = "1234"
            kiosk.pan = on_file.card_no[:-1] + str((int(on_file.card_no[-1]) + 1) % 10)
            with pytest.raises(TerminalError, match=r"refused: [0-9A-Z]{2} "):
                await kiosk.ep_load(1_000)  # another card's number: refused before the bank
            assert not [r for r in bank.issuer.received if isinstance(r.typed, SavingsDebit)]
        finally:
            await link.close()

    run(tmp_path, scenario)


def test_sim_kiosk_ep_load_from_the_cli(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        daemon = bank.daemon
        on_file = first_card(bank.database)
        (conn,), _ = await issue_cards(daemon, [on_file])
        card_path = tmp_path / "card.json"
        VirtualCard(conn._card.state, path=card_path).save()  # type: ignore[attr-defined]
        tmk = await tmk_file(daemon, KIOSK, tmp_path / "kiosk.tmk")
        script = tmp_path / "script.txt"
        script.write_text("sign_on\nep_load 1500\n", encoding="utf-8")
        args = ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(tmk)]
        args += ["--state", str(tmp_path / "state.json"), "--pan", on_file.card_no]
        args += ["--card", str(card_path), "--port", str(daemon.app.terminal_port)]
        result = await invoke([*args, "--script", str(script)])
        assert result.exit_code == 0, result.output
        assert "loaded 15.00: EP now 15.00" in result.output
        card = DirectConnection(VirtualCard.load(card_path))
        card.connect()
        terminal_card.open_application(card, PIN)
        assert terminal_card.balance(card, Purse.EP) == 1_500
        shadow, in_doubt, _ = await bank.ep_accounts(on_file.serial)
        assert (shadow, in_doubt) == (1_500, 0)

    run(tmp_path, scenario)


def test_a_card_of_no_configured_bin_is_not_routed_to_the_bank(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        daemon = bank.daemon
        on_file = first_card(bank.database)
        (conn,), _ = await issue_cards(daemon, [on_file])
        link = await terminal_link(
            daemon, KIOSK, "centre", tmp_path / "kiosk.json", daemon.app.terminal_port, 10.0
        )
        kiosk = Kiosk(link, conn, pan=on_file.card_no, pin=PIN)
        try:
            await kiosk.sign_on()
            with pytest.raises(TerminalError, match="refused: 92 no route: "):
                await kiosk.ep_load(1_000)
            assert not [r for r in bank.issuer.received if isinstance(r.typed, SavingsDebit)]
            assert (await kiosk.load(1_000))[0].startswith("loaded")  # ED: the local ledger
        finally:
            await link.close()

    run(tmp_path, scenario, bins=("999999",))


def test_a_kiosk_ep_load_whose_confirmation_was_lost_is_proven_by_the_card(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        daemon = bank.daemon
        on_file = first_card(bank.database)
        (conn,), _ = await issue_cards(daemon, [on_file])
        link = await terminal_link(
            daemon, KIOSK, "centre", tmp_path / "kiosk.json", daemon.app.terminal_port, 10.0
        )
        kiosk = Kiosk(link, conn, pan=on_file.card_no, pin=PIN)
        try:
            await kiosk.sign_on()
            lost = await kiosk.ep_load(4_000, lose_confirmation=True)
            assert lost == ["card credited 40.00; the confirmation was lost"]
            shadow, in_doubt, _ = await bank.ep_accounts(on_file.serial)
            assert (shadow, in_doubt) == (0, 4_000)
            with pytest.raises(TerminalError, match="recover"):
                await kiosk.ep_load(1_000)  # the kiosk first settles what it owes the card
            assert await kiosk.recover() == [
                "the card proves the load",
                "loaded 40.00: EP now 40.00",
            ]
            shadow, in_doubt, _ = await bank.ep_accounts(on_file.serial)
            assert (shadow, in_doubt) == (4_000, 0)
            assert sum(bank.issuer.applied.values()) == 4_000  # debited once, never reversed
        finally:
            await link.close()

    run(tmp_path, scenario)

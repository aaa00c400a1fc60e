"""`medswitch sim bank`: the issuer side answers savings debits by rule and applies a reversal
once however often it is repeated; the acquirer side runs a counter script from the command
line against a real daemon, with the card in its reader."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop
from click.testing import CliRunner

from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from ledger.demo import init_demo
from messages.bank import BankReversal, SavingsDebit
from simulators.bank import BankAcquirer, BankIssuer, IssuerRules, original_data
from switch.app import open_app
from switch.cli import main as cli_main
from switch.config import BankConfig, Config, HttpConfig, ListenConfig
from switch.demo import keys as demo_keys
from switch.demo.keys import demo_personal_keys
from switch.key_home import component_files_of, open_soft_hsm
from switch.keystore_file import FileKeyStore
from switch.sessions import Sessions
from tests.support.daemon import Daemon, new_hsm, now
from tests.support.kiosk import card_balance, issue_card
from tests.support.on_file import first_card

ACQUIRER = "01020000"


def run(coro: object) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(coro, timeout=120))  # type: ignore[arg-type]


@asynccontextmanager
async def issuer_and_switch(rules: IssuerRules) -> AsyncIterator[tuple[BankIssuer, BankAcquirer]]:
    """The issuer simulator on port 0, and a client standing in for the switch's outbound link."""
    hsm = new_hsm(MemoryKeyStore())
    zak = await hsm.generate_key("bank/01020000/ZAK", KeyUsage.ZAK, now=now())
    bank = BankIssuer(hsm, zak, rules)
    await bank.start()
    switch = await BankAcquirer.connect(
        "127.0.0.1", bank.port, hsm, zak, ACQUIRER, clock=now, timeout_s=1.0
    )
    try:
        yield bank, switch
    finally:
        await switch.close()
        await bank.close()


def _debit(switch: BankAcquirer, amount_fen: int) -> SavingsDebit:
    return SavingsDebit(
        **switch.envelope(), pan="6212340000000016", amount_fen=amount_fen, pin_block=bytes(8)
    )


def test_issuer_approves_declines_and_applies_a_reversal_once() -> None:
    async def scenario() -> None:
        async with issuer_and_switch(IssuerRules(decline_above_fen=50_000)) as (bank, switch):
            debit = _debit(switch, 20_000)
            approved = await switch.exchange(debit)
            assert approved.response_code == "00" and approved.mac is not None
            declined = await switch.exchange(_debit(switch, 50_001))
            assert declined.response_code == "51"
            assert sum(bank.applied.values()) == 20_000
            reversal = BankReversal(
                **switch.envelope(),
                processing_code="401000",
                original=original_data(debit, "0200"),
                amount_fen=20_000,
            )
            assert (await switch.exchange(reversal)).response_code == "00"
            repeat = replace(reversal, repeat=True)
            assert (await switch.exchange(repeat)).response_code == "00"
            assert bank.applied == {}
            assert [r.mti for r in bank.received] == ["0200", "0200", "0420", "0421"]
            assert bank.received[-1].repeat  # 0421 ≡ 0420: the same message, applied once
            bad = await switch.exchange(_debit(switch, 100), bad_mac=True)
            assert bad.response_code == "A0"

    run(scenario())


def test_issuer_that_drops_is_never_answered() -> None:
    async def scenario() -> None:
        async with issuer_and_switch(IssuerRules(drop=True)) as (bank, switch):
            with pytest.raises(TimeoutError):
                await switch.exchange(_debit(switch, 1_000))
            assert len(bank.received) == 1 and bank.applied == {}

    run(scenario())


def test_sim_bank_acquirer_runs_a_counter_script(tmp_path: Path) -> None:
    """The CLI with a file key home (TEST ONLY components), the daemon on the same keys."""

    async def scenario() -> None:
        personal = await demo_personal_keys(tmp_path)
        await asyncio.to_thread(init_demo, tmp_path / "medswitch.db", 3, personal=personal)
        files = demo_keys.write_test_components(tmp_path)
        hsm = open_soft_hsm(tmp_path, component_files_of(files))
        store = FileKeyStore(tmp_path / "keys.jsonl")
        zak: KeyRef = await hsm.generate_key("bank/01020000/ZAK", KeyUsage.ZAK, now=now())
        config = Config(
            home=str(tmp_path),
            terminal=replace(ListenConfig(), port=0),
            http=HttpConfig(port=0),
            bank=BankConfig(enabled=True, port=0, zak_alias=zak.alias),
        )
        app = await open_app(config, hsm, Sessions(store), clock=now)
        await app.start()
        try:
            daemon = Daemon(app, hsm, MemoryKeyStore(), tmp_path)
            on_file = first_card(tmp_path / "medswitch.db")
            conn = await issue_card(daemon, on_file)
            script = (
                f"sign_on\necho  # link up\nload {on_file.card_no} 2500\n"
                f"unload {on_file.card_no} 500\ninquiry {on_file.card_no}\n"
            )
            args = ["sim", "bank", "acquirer", "--home", str(tmp_path), "--port"]
            args += [str(app.bank_port), "--card", on_file.card_no, "--reader", "virtual"]
            args += ["-c", str(files[0]), "-c", str(files[1])]
            result = await asyncio.to_thread(
                CliRunner().invoke,
                cli_main,
                args,
                input=script,
                obj={"connect": lambda reader: conn},
            )
            assert result.exit_code == 0, result.output
            lines = [ln for ln in result.output.splitlines() if "->" in ln]
            assert [ln.rsplit(" ", 1)[1] for ln in lines] == ["00"] * 5, result.output
            assert on_file.card_no not in result.output  # masked
            assert card_balance(conn) == 2_000
        finally:
            await app.stop()

    run(scenario())


def test_acquirer_without_the_links_zak_is_a_clear_error(tmp_path: Path) -> None:
    files = demo_keys.write_test_components(tmp_path)
    token = secrets.token_hex(2)
    args = ["sim", "bank", "acquirer", "--home", str(tmp_path), "--port", "1"]
    args += ["-c", str(files[0]), "-c", str(files[1]), "--zak", f"missing/{token}"]
    result = CliRunner().invoke(cli_main, args, input="dance\n")
    assert result.exit_code != 0 and f"no key missing/{token}" in result.output

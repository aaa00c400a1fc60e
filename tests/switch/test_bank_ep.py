"""A savings-funded EP load at a bank counter, over real sockets both ways: the counter (the bank
as acquirer) → the switch → the bank as savings issuer (the issuer simulator) and back.
Approved, declined, and timed out — the timed-out debit reversed once by store-and-forward."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from dataclasses import replace
from pathlib import Path

import uvloop

from hsm import pinblock
from hsm.des import Des, adjust_parity
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component
from ledger.demo import init_demo
from ledger.kinds import AccountKind, account_id
from messages.bank import SavingsDebit
from messages.private import Purse
from simulators import terminal_card
from simulators.bank import BankAcquirer, BankIssuer, IssuerRules
from switch.app import open_app
from switch.config import BankConfig, Config, HttpConfig, ListenConfig
from switch.demo.keys import demo_personal_keys
from switch.sessions import Sessions
from tests.support.daemon import Daemon, new_hsm, now
from tests.support.kiosk import PIN, issue_card
from tests.support.on_file import first_card

BANK = "01020000"


def _acknowledged(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [r[0] for r in connection.execute("SELECT status FROM reversal_queue")]


async def _until(condition: object, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def test_ep_load_from_savings_approved_declined_and_timed_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        database = tmp_path / "medswitch.db"
        await asyncio.to_thread(
            init_demo, database, 3, personal=await demo_personal_keys(database.parent)
        )
        store = MemoryKeyStore()
        hsm = new_hsm(store)
        zak_in = await hsm.generate_key(f"bank/{BANK}/ZAK", KeyUsage.ZAK, now=now())
        clear_zpk = adjust_parity(secrets.token_bytes(16))  # the counters' PIN pads hold it
        await hsm.form_key(f"bank/{BANK}/ZPK", KeyUsage.ZPK, [Component(clear_zpk)], now=now())
        zak_out = await hsm.generate_key(f"bank/{BANK}/out/ZAK", KeyUsage.ZAK, now=now())
        await hsm.generate_key(f"bank/{BANK}/out/ZPK", KeyUsage.ZPK, now=now())
        issuer = BankIssuer(hsm, zak_out)
        await issuer.start()
        config = Config(
            home=str(tmp_path),
            terminal=replace(ListenConfig(), port=0),
            http=HttpConfig(port=0),
            bank=BankConfig(
                enabled=True,
                port=0,
                outbound_host="127.0.0.1",
                outbound_port=issuer.port,
                outbound_timeout_s=0.5,
            ),
        )
        app = await open_app(config, hsm, Sessions(store), clock=now)
        await app.start()
        counter: BankAcquirer | None = None
        try:
            assert app.bank is not None and app.bank.outbound is not None
            assert await app.bank.outbound.wait_up(5)
            daemon = Daemon(app, hsm, store, tmp_path)
            on_file = first_card(database)
            conn = await issue_card(daemon, on_file)
            block = Des(clear_zpk).encrypt_ecb(pinblock.encode_format0(PIN, on_file.card_no))
            counter = await BankAcquirer.connect(
                "127.0.0.1", app.bank_port, hsm, zak_in, BANK, clock=now
            )
            assert (await counter.sign_on()).response_code == "00"

            reply, confirmation = await counter.ep_load(conn, on_file.card_no, PIN, 20_000, block)
            assert reply.response_code == "00", reply
            assert confirmation is not None and confirmation.response_code == "00"
            assert terminal_card.balance(conn, Purse.EP) == 20_000
            debits = [r.typed for r in issuer.received if isinstance(r.typed, SavingsDebit)]
            assert len(debits) == 1 and debits[0].pin_block != block  # translated to its ZPK
            assert sum(issuer.applied.values()) == 20_000

            issuer.rules = IssuerRules(decline_above_fen=1_000)
            reply, _ = await counter.ep_load(conn, on_file.card_no, PIN, 5_000, block)
            assert reply.response_code == "51"

            issuer.rules = IssuerRules(delay_s=1.0)  # the bank debits, but too late
            reply, _ = await counter.ep_load(conn, on_file.card_no, PIN, 3_000, block)
            assert reply.response_code == "98"
            await _until(lambda: _acknowledged(database) == ["acknowledged"])
            reversals = [r.mti for r in issuer.received if r.mti.startswith("04")]
            assert reversals[0] == "0420" and set(reversals[1:]) <= {"0421"}
            assert sum(issuer.applied.values()) == 20_000  # the late debit reversed, once

            assert terminal_card.balance(conn, Purse.EP) == 20_000
            ledger = app.ledger
            assert ledger is not None
            ids = [
                account_id(AccountKind.CARD_EP_SHADOW, on_file.serial),
                account_id(AccountKind.EP_LOADS_IN_DOUBT, on_file.serial),
            ]
            found = await ledger.balances(ids)
            assert [found[i].balance_fen if i in found else 0 for i in ids] == [20_000, 0]
        finally:
            if counter is not None:
                await counter.close()
            await app.stop()
            await issuer.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), timeout=120))

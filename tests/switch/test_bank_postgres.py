"""The bank links on PostgreSQL, end to end over real sockets: the daemon with ``[bank] enabled``
on a PostgreSQL deployment; a counter ED load through the bank's counter (the acquirer
simulator); a savings-funded EP load approved, then one the bank answers too late, its reversal
queued in PostgreSQL and drained by store-and-forward. Outbound STANs come from the database's
``stan`` sequence: unique across the workers (two stores on one schema) and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from hsm import pinblock
from hsm.des import Des
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from ledger.kinds import AccountKind, account_id
from messages.bank import SavingsDebit
from messages.private import Purse
from simulators import terminal_card
from simulators.bank import BankAcquirer, IssuerRules
from switch.bank.link import BankLinkPool, OutboundSettings
from switch.database import open_stores
from tests.support.bank import BANK, BankDaemon, bank_daemon
from tests.support.daemon import BACKENDS, make_database, make_pg_database, new_hsm, now
from tests.support.kiosk import PIN, issue_card
from tests.support.pg import DSN, fresh_schema


async def _until_statuses(bank: BankDaemon, wanted: list[str], timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        rows = await bank.fetch("SELECT status FROM reversal_queue ORDER BY seq")
        if [r[0] for r in rows] == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"reversal queue never {wanted}")


def _run(scenario: object) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario, timeout=120))  # type: ignore[arg-type]


@pytest.mark.postgres
def test_bank_links_on_postgresql_counter_load_and_reversed_savings_load(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with bank_daemon(tmp_path, backend="postgres") as bank:
            stores = bank.app.stores
            assert stores is not None and stores.postgres
            on_file = await bank.first_card()
            conn = await issue_card(bank.daemon, on_file)
            ed = [
                account_id(AccountKind.CARD_ED_SHADOW, on_file.serial),
                account_id(AccountKind.PERSONAL_FUND, on_file.cardholder_id),
            ]
            (_, fund_before) = await bank.balances(*ed)
            counter = await BankAcquirer.connect(
                "127.0.0.1", bank.app.bank_port, bank.daemon.hsm, bank.zak_in, BANK, clock=now
            )
            try:
                assert (await counter.sign_on()).response_code == "00"
                reply, confirmation = await counter.ed_load(conn, on_file.card_no, PIN, 10_000)
                assert reply.response_code == "00", reply
                assert confirmation is not None and confirmation.response_code == "00"
                assert terminal_card.balance(conn, Purse.ED) == 10_000
                assert await bank.balances(*ed) == [10_000, fund_before - 10_000]

                block = Des(bank.clear_zpk).encrypt_ecb(
                    pinblock.encode_format0(PIN, on_file.card_no)
                )
                reply, confirmation = await counter.ep_load(
                    conn, on_file.card_no, PIN, 20_000, block
                )
                assert reply.response_code == "00", reply
                assert confirmation is not None and confirmation.response_code == "00"
                assert sum(bank.issuer.applied.values()) == 20_000

                bank.issuer.rules = IssuerRules(delay_s=1.0)  # the bank debits, too late
                reply, _ = await counter.ep_load(conn, on_file.card_no, PIN, 3_000, block)
                assert reply.response_code == "98"
                await _until_statuses(bank, ["acknowledged"])  # queued in PG, then drained
            finally:
                await counter.close()
            reversals = [r.mti for r in bank.issuer.received if r.mti.startswith("04")]
            assert reversals[0] == "0420" and set(reversals[1:]) <= {"0421"}
            assert sum(bank.issuer.applied.values()) == 20_000  # the late debit reversed once
            assert terminal_card.balance(conn, Purse.EP) == 20_000
            assert (await bank.ep_accounts(on_file.serial))[:2] == [20_000, 0]
            debits = [r.typed for r in bank.issuer.received if isinstance(r.typed, SavingsDebit)]
            stans = [int(d.stan) for d in debits]
            assert len(set(stans)) == len(stans) == 2
            [(drawn,)] = await bank.fetch("SELECT last_value FROM medswitch_stan")
            assert max(stans) <= drawn  # drawn from the database's sequence

    _run(scenario())


async def _envelopes(url: str, count: int) -> list[str]:
    """``count`` outbound F11s of a two-connection link on the daemon's stores at ``url`` (one
    "worker"): half from the numbers drawn ahead, half drawn as needed."""
    stores = await open_stores(url)
    try:
        hsm = new_hsm(MemoryKeyStore())
        zak = await hsm.generate_key("bank/x/ZAK", KeyUsage.ZAK, now=now())
        settings = OutboundSettings("127.0.0.1", 9, BANK)
        pool = BankLinkPool.open(settings, hsm, zak, now, 2, stores.sequences)
        assert pool.stans is not None
        await pool.stans.fill()
        drawn = [pool.envelope()["stan"] for _ in range(count // 2)]
        drawn += [(await pool.next_envelope())["stan"] for _ in range(count - count // 2)]
        await pool.close()
        return drawn
    finally:
        await stores.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_outbound_stans_never_repeat_across_workers_and_restarts(
    backend: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        if backend == "sqlite":  # one process: a restart takes the next block
            make_database(tmp_path / "medswitch.db", {})
            url = f"sqlite:///{tmp_path / 'medswitch.db'}"
            first = await _envelopes(url, 40)
            second = await _envelopes(url, 40)
        else:  # two workers at once on one schema
            async with fresh_schema() as schema:
                url = f"{DSN}?schema={schema}"
                await make_pg_database(url, {})
                first, second = await asyncio.gather(_envelopes(url, 40), _envelopes(url, 40))
        every = first + second
        assert len(set(every)) == len(every) == 80
        assert all(len(s) == 6 and s != "000000" for s in every)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))

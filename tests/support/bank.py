"""The daemon with both bank links for the bank tests: the inbound link's keys (its ZPK formed
from a clear value, as a counter's PIN pad holds it), the outbound link's keys, the link's ZMK,
and the issuer simulator the outbound link connects to."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hsm.des import adjust_parity
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component
from hsm.soft import SoftHsm
from ledger.demo import init_demo
from ledger.kinds import AccountKind, account_id
from simulators.bank import BankIssuer, BankKeys
from switch.app import App, open_app
from switch.bank.host import BankHost
from switch.config import BankConfig, Config, HttpConfig, ListenConfig
from switch.demo.keys import demo_personal_keys
from switch.sessions import Sessions
from tests.support.daemon import Daemon, new_hsm, now
from tests.support.on_file import CardOnFile
from tests.support.operators import enrol
from tests.support.pg import DSN, fresh_schema

BANK = "01020000"
BANK_B = "01030000"  # a second bank, when asked for


@dataclass
class BankDaemon:
    daemon: Daemon
    issuer: BankIssuer
    zak_in: KeyRef
    clear_zpk: bytes  # the counters' PIN pad key (inbound ZPK)
    zmk: KeyRef
    issuer_b: BankIssuer | None = None  # the second bank's, when asked for
    zak_in_b: KeyRef | None = None

    @property
    def app(self) -> App:
        return self.daemon.app

    @property
    def bank(self) -> BankHost:
        assert self.daemon.app.bank is not None
        return self.daemon.app.bank

    @property
    def database(self) -> Path:
        return self.daemon.home / "medswitch.db"

    async def operator(self, name: str, *roles: str) -> Path:
        """The token file of operator ``name`` with ``roles``, logged in (enrolled on first
        use) on the daemon's database."""
        tokens = self.daemon.home / "operator-tokens"
        return await asyncio.to_thread(enrol, self.database, tokens, name, *roles)

    async def bearer(self, name: str, *roles: str) -> dict[str, str]:
        """The Authorization header of that operator's login."""
        token = (await self.operator(name, *roles)).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    async def balances(self, *ids: str) -> list[int]:
        ledger = self.app.ledger
        assert ledger is not None
        found = await ledger.balances(list(ids))
        return [found[i].balance_fen if i in found else 0 for i in ids]

    async def ep_accounts(self, serial: str) -> list[int]:
        """[card EP shadow, EP loads in doubt, bank clearing] of a card and the bank."""
        return await self.balances(
            account_id(AccountKind.CARD_EP_SHADOW, serial),
            account_id(AccountKind.EP_LOADS_IN_DOUBT, serial),
            account_id(AccountKind.BANK_CLEARING, BANK),
        )

    async def restart(self) -> None:
        """Stop the daemon and start it again on the same home, keys and database (its bank
        links sign on again once their bank is there)."""
        old = self.daemon.app
        await old.stop()
        app = await open_app(old.config, self.daemon.hsm, Sessions(self.daemon.store), clock=now)
        await app.start()
        self.daemon.app = app

    def reversal_statuses(self) -> list[str]:
        with sqlite3.connect(self.database) as connection:
            rows = connection.execute("SELECT status FROM reversal_queue ORDER BY seq")
            return [r[0] for r in rows]

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query (no parameters) on the daemon's database, either backend."""
        stores = self.app.stores
        assert stores is not None
        if stores.pool is not None:
            return [tuple(row) for row in await stores.pool.fetch(sql)]
        with sqlite3.connect(self.database) as connection:
            return connection.execute(sql).fetchall()

    async def first_card(self) -> CardOnFile:
        rows = await self.fetch(
            "SELECT card_no, application_serial, cardholder_id FROM cards ORDER BY card_no LIMIT 1"
        )
        return CardOnFile(*rows[0])


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait, bounded, for ``condition``."""
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def second_bank(hsm: SoftHsm, **settings: Any) -> tuple[BankConfig, BankIssuer, KeyRef]:
    """Bank B's keys (its own aliases), its issuer simulator, and its [[bank.links]] entry."""
    prefix = f"bank/{BANK_B}"
    zak_in = await hsm.generate_key(f"{prefix}/ZAK", KeyUsage.ZAK, now=now())
    await hsm.generate_key(f"{prefix}/ZPK", KeyUsage.ZPK, now=now())
    zak_out = await hsm.generate_key(f"{prefix}/out/ZAK", KeyUsage.ZAK, now=now())
    await hsm.generate_key(f"{prefix}/out/ZPK", KeyUsage.ZPK, now=now())
    zmk = await hsm.generate_key(f"{prefix}/ZMK", KeyUsage.ZMK, now=now())
    issuer = BankIssuer(hsm, BankKeys(zak_out, zmk, prefix="bank-sim/issuer-b"))
    await issuer.start()
    config = BankConfig(
        enabled=True,
        port=0,
        acquirer_id=BANK_B,
        zak_alias=f"{prefix}/ZAK",
        zpk_alias=f"{prefix}/ZPK",
        outbound_host="127.0.0.1",
        outbound_port=issuer.port,
        outbound_zak_alias=f"{prefix}/out/ZAK",
        outbound_zpk_alias=f"{prefix}/out/ZPK",
        zmk_alias=f"{prefix}/ZMK",
        outbound_timeout_s=0.5,
        **settings,
    )
    return config, issuer, zak_in


@asynccontextmanager
async def bank_daemon(
    tmp: Path,
    *,
    cardholders: int = 3,
    bank_b: dict[str, Any] | None = None,
    backend: str = "sqlite",
    **bank: Any,
) -> AsyncIterator[BankDaemon]:
    """The daemon over a demo deployment, its bank links up, the issuer simulator running;
    with ``bank_b`` (its settings), a second bank beside the first; with ``backend`` =
    "postgres", the deployment in a fresh PostgreSQL schema."""
    if backend != "postgres":
        personal = await demo_personal_keys(tmp)
        await asyncio.to_thread(init_demo, tmp / "medswitch.db", cardholders, personal=personal)
        async with _bank_daemon(tmp, "", bank_b, bank) as running:
            yield running
        return
    async with fresh_schema() as schema:
        url = f"{DSN}?schema={schema}"
        personal = await demo_personal_keys(tmp)
        await asyncio.to_thread(init_demo, url, cardholders, personal=personal)
        async with _bank_daemon(tmp, url, bank_b, bank) as running:
            yield running


@asynccontextmanager
async def _bank_daemon(
    tmp: Path, url: str, bank_b: dict[str, Any] | None, bank: dict[str, Any]
) -> AsyncIterator[BankDaemon]:
    store = MemoryKeyStore()
    hsm = new_hsm(store)
    zak_in = await hsm.generate_key(f"bank/{BANK}/ZAK", KeyUsage.ZAK, now=now())
    clear_zpk = adjust_parity(secrets.token_bytes(16))
    await hsm.form_key(f"bank/{BANK}/ZPK", KeyUsage.ZPK, [Component(clear_zpk)], now=now())
    zak_out = await hsm.generate_key(f"bank/{BANK}/out/ZAK", KeyUsage.ZAK, now=now())
    await hsm.generate_key(f"bank/{BANK}/out/ZPK", KeyUsage.ZPK, now=now())
    zmk = await hsm.generate_key(f"bank/{BANK}/ZMK", KeyUsage.ZMK, now=now())
    issuer = BankIssuer(hsm, BankKeys(zak_out, zmk, prefix="bank-sim/issuer"))
    await issuer.start()
    settings = {"outbound_timeout_s": 0.5, **bank}
    issuer_b = zak_in_b = None
    if bank_b is not None:
        link_b, issuer_b, zak_in_b = await second_bank(hsm, **bank_b)
        settings["links"] = (link_b,)
    config = Config(
        home=str(tmp),
        database_url=url,
        terminal=replace(ListenConfig(), port=0),
        http=HttpConfig(port=0),
        bank=BankConfig(
            enabled=True,
            port=0,
            outbound_host="127.0.0.1",
            outbound_port=issuer.port,
            **settings,
        ),
    )
    app = await open_app(config, hsm, Sessions(store), clock=now)
    await app.start()
    daemon = Daemon(app, hsm, store, tmp)
    try:
        assert app.bank is not None and app.bank.outbound is not None
        assert await app.bank.outbound.wait_up(5)
        for peer in app.bank.peers:
            assert peer.outbound is not None and await peer.outbound.wait_up(5)
        yield BankDaemon(daemon, issuer, zak_in, clear_zpk, zmk, issuer_b, zak_in_b)
    finally:
        await daemon.app.stop()  # the one running (restart() replaces it)
        await issuer.close()
        if issuer_b is not None:
            await issuer_b.close()

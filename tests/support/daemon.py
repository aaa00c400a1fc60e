"""A real daemon on 127.0.0.1 (port 0) over a temporary database — SQLite, or a fresh PostgreSQL
schema (``backend="postgres"``; tests take the ``backend`` fixture to run on both) — and key
store, and a terminal that speaks to it through the same messages/hsm code (its own secure
module). ``run`` runs a scenario against a demo daemon, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
import pytest
import uvloop

from hsm.des import kcv
from hsm.interface import MacAlgorithm, SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore, MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from ledger.demo import init_demo
from ledger.migrate import upgrade_sqlite
from messages import terminal_table
from messages.codec import Codec, Message
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import SignOn, SignOnReply, TerminalMessage, TerminalReply
from messages.terminal_table import build, parse
from simulators.terminal_link import Envelope
from switch.app import App, open_app
from switch.config import Config, HttpConfig, ListenConfig
from switch.demo.keys import demo_personal_keys
from switch.sessions import Sessions
from tests.support.on_file import CardOnFile, PsamOnFile
from tests.support.pg import DSN, fresh_schema

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


ZONE = ZoneInfo("Asia/Shanghai")
INSTITUTION = "101320000000001"
CODEC = Codec(TERMINAL)


def now() -> datetime:
    return datetime.now(ZONE).replace(microsecond=0)


async def make_pg_database(url: str, terminals: dict[str, str]) -> None:
    from switch.database import migrate_postgres

    await migrate_postgres(url)
    connection = await asyncpg.connect(DSN, server_settings={"search_path": url.split("=")[-1]})
    try:
        await connection.execute(
            "INSERT INTO institutions (id, kind, name, level) VALUES ($1, 'hospital', 'Demo', 3)",
            INSTITUTION,
        )
        for terminal_id, kind in terminals.items():
            await connection.execute(
                "INSERT INTO terminals (id, institution_id, kind) VALUES ($1, $2, $3)",
                terminal_id,
                INSTITUTION,
                kind,
            )
    finally:
        await connection.close()


def make_database(path: Path, terminals: dict[str, str]) -> None:
    upgrade_sqlite(path)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO institutions (id, kind, name, level) VALUES (?, 'hospital', 'Demo', 3)",
            (INSTITUTION,),
        )
        for terminal_id, kind in terminals.items():
            connection.execute(
                "INSERT INTO terminals (id, institution_id, kind) VALUES (?, ?, ?)",
                (terminal_id, INSTITUTION, kind),
            )


def new_hsm(store: KeyStore) -> SoftHsm:
    """A software HSM with a fresh random LMK (two components)."""
    components = [Component(secrets.token_bytes(16)) for _ in range(2)]
    return SoftHsm(Lmk(components, kcv(combine(components))), store)


@dataclass
class Terminal:
    """A POS: its id, the key material its secure module holds, its batch and STAN."""

    terminal_id: str
    hsm: SoftHsm
    tmk: KeyRef
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    keys: SignOnKeys | None = None
    batch: str = "000000"
    stan: int = 0
    institution_id: str = INSTITUTION
    sent: bytes = b""  # the last request's payload, to send it again as a retransmission

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    async def send(self, payload: bytes) -> bytes:
        self.sent = payload
        self.writer.write(encode_frame(payload, LengthFormat.BINARY2))
        await self.writer.drain()
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for _ in range(1000):
            data = await asyncio.wait_for(self.reader.read(4096), timeout=10)
            assert data, "connection closed"
            frames = decoder.feed(data)
            if frames:
                return frames[0]
        raise AssertionError("no reply")

    async def exchange(
        self, request: TerminalMessage, *, mac: bool = True, bad_mac: bool = False
    ) -> TerminalReply:
        message = terminal_table.build(request)
        payload = CODEC.encode(message)
        if mac and self.keys is not None:
            fields = dict(message.fields)
            fields[64] = bytes(8)
            payload = CODEC.encode(Message(message.mti, fields, message.tpdu, message.header))
            code = await self.hsm.generate_mac(
                self.keys.mak, MacAlgorithm.CUP_ECB, CODEC.mac_block(payload)
            )
            payload = CODEC.with_mac(payload, b"00000000" if bad_mac else code)
        answer = await self.send(payload)
        reply = terminal_table.parse(CODEC.decode(answer))
        assert isinstance(reply, TerminalReply)
        if reply.mac is not None and self.keys is not None:
            check = await self.hsm.verify_mac(
                self.keys.mak, MacAlgorithm.CUP_ECB, CODEC.mac_block(answer), reply.mac
            )
            assert check, "the reply's MAC does not verify"
        return reply

    async def sign_on(self) -> SignOnReply:
        """Sign on (00 expected); the secure module takes the keys, checking their KCVs."""
        reply = await self.exchange(SignOn(**self.envelope()), mac=False)
        assert isinstance(reply, SignOnReply)
        assert reply.response_code == "00"
        assert reply.keys is not None
        self.keys = await self.hsm.accept_sign_on(
            self.tmk, reply.keys.build(), f"pos/{self.terminal_id}", now=now()
        )
        self.batch = reply.batch
        return reply

    def envelope(self) -> Envelope:
        return {
            "stan": self.next_stan(),
            "terminal_id": self.terminal_id,
            "institution_id": self.institution_id,
            "batch": self.batch,
        }


@dataclass
class Daemon:
    app: App
    hsm: SoftHsm
    store: KeyStore
    home: Path

    def sql(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (``?`` parameters) on the daemon's database, committed. The
        daemon's card directory then reads afresh at once, as after a change made through the
        daemon itself (another process's change is seen from 5 ms after its commit:
        test_card_status_live)."""
        stores = self.app.stores
        assert stores is not None
        if stores.bridge is not None:
            with contextlib.closing(stores.bridge.connection()) as pg:
                rows = pg.execute(statement, parameters).fetchall()
        else:
            with contextlib.closing(sqlite3.connect(self.home / "medswitch.db")) as db, db:
                rows = db.execute(statement, parameters).fetchall()
        stores.cards.forget()
        return rows

    def first_card(self) -> CardOnFile:
        return CardOnFile(
            *self.sql(
                "SELECT card_no, application_serial, cardholder_id FROM cards"
                " ORDER BY card_no LIMIT 1"
            )[0]
        )

    def first_psam(self) -> PsamOnFile:
        return PsamOnFile(
            *self.sql(
                "SELECT serial, psam_terminal_no, institution_id, terminal_id FROM psams"
                " ORDER BY serial LIMIT 1"
            )[0]
        )

    @asynccontextmanager
    async def terminal(
        self, terminal_id: str, *, provision: bool = True
    ) -> AsyncIterator[Terminal]:
        tmk_alias = f"tmk/{terminal_id}"
        tmk = await self.hsm.generate_key(tmk_alias, KeyUsage.TMK, now=now())
        # The POS's secure module holds the same TMK (injected at the terminal's key loading).
        reader, writer = await asyncio.open_connection("127.0.0.1", self.app.terminal_port)
        try:
            yield Terminal(terminal_id, self.hsm, tmk, reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()


@asynccontextmanager
async def running_daemon(
    tmp: Path,
    terminals: dict[str, str] | None = None,
    *,
    cardholders: int = 0,
    backend: str = "sqlite",
    database_url: str | None = None,
) -> AsyncIterator[Daemon]:
    """The daemon over a database with ``terminals`` (and nothing else), or, with
    ``cardholders``, over a demo deployment (institutions, terminals, funded cards); on
    PostgreSQL a fresh schema, or the (empty) database at ``database_url`` (a demo only)."""
    if database_url is not None:
        personal = await demo_personal_keys(tmp)
        await asyncio.to_thread(init_demo, database_url, cardholders, personal=personal)
        async with _serving(tmp, database_url) as daemon:
            yield daemon
        return
    if backend == "postgres":
        async with fresh_schema() as schema:
            url = f"{DSN}?schema={schema}"
            if cardholders:
                personal = await demo_personal_keys(tmp)
                await asyncio.to_thread(init_demo, url, cardholders, personal=personal)
            else:
                await make_pg_database(url, terminals or {})
            async with _serving(tmp, url) as daemon:
                yield daemon
        return
    if cardholders:
        personal = await demo_personal_keys(tmp)
        await asyncio.to_thread(init_demo, tmp / "medswitch.db", cardholders, personal=personal)
    else:
        make_database(tmp / "medswitch.db", terminals or {})
    async with _serving(tmp, "") as daemon:
        yield daemon


@asynccontextmanager
async def _serving(tmp: Path, database_url: str) -> AsyncIterator[Daemon]:
    store = MemoryKeyStore()
    hsm = new_hsm(store)
    config = Config(
        home=str(tmp),
        database_url=database_url,
        terminal=replace(ListenConfig(), port=0),
        http=HttpConfig(port=0),
    )
    app = await open_app(config, hsm, Sessions(store), clock=now)
    await app.start()
    try:
        yield Daemon(app, hsm, store, tmp)
    finally:
        await app.stop()


def run(tmp_path: Path, scenario, backend: str = "sqlite") -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=3, backend=backend) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


async def sign_on_once(port: int) -> SignOnReply:
    """One sign-on of POS00001 on a fresh connection to a daemon's terminal port."""
    codec = Codec(TERMINAL)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = SignOn(stan="000001", terminal_id="POS00001", institution_id=INSTITUTION)
        writer.write(encode_frame(codec.encode(build(request)), LengthFormat.BINARY2))
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for _ in range(100):
            frames = decoder.feed(await asyncio.wait_for(reader.read(4096), timeout=10))
            if frames:
                reply = parse(codec.decode(frames[0]))
                assert isinstance(reply, SignOnReply)
                return reply
        raise AssertionError("no reply")
    finally:
        writer.close()
        await writer.wait_closed()

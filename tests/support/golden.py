"""The golden frames of specs/examples/: a deterministic daemon (the demo deployment with seed 1,
every key formed from a published TEST ONLY value, the sign-on keys from a seeded generator, a
fixed clock) and a terminal with clear TEST keys and a card model that drive it through every
transaction the examples cover.

    python -m tests.support.golden specs/examples/frames.json   # once: the frames are frozen

Changing a golden frame is a spec change (specs/CHANGELOG.md)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from hsm import pboc
from hsm.des import Des, adjust_parity, kcv
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import TEST_ONLY_COMPONENTS, Component, Lmk, combine
from hsm.mac import cup_ecb, pboc_mac
from hsm.soft import SoftHsm
from ledger.demo import init_demo
from messages.codec import Codec, Message
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from routing.cardkeys import card_master_alias
from switch.app import App, open_app
from switch.config import Config, HttpConfig, ListenConfig
from switch.demo import keys as demo_keys
from switch.demo import medical as demo_medical
from switch.sessions import Sessions, tmk_alias

CLOCK = datetime(2026, 12, 7, 10, 30, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
SEED = 18  # the HSM's generator: the sign-on keys
TPDU, HEADER = bytes.fromhex("6000030000"), bytes.fromhex("613100310000")
CODEC = Codec(TERMINAL)
POS, KIOSK = "P0000001", "K0000001"
KIOSK_NUMBER = bytes.fromhex("000000000001")
CARD_RANDOM = bytes.fromhex("1A2B3C4D")
PSAM_SERIAL = 1
LOAD_FEN = 20_000
BILL = {"his_bill_no": "GOLDEN-1", "service_date": CLOCK.date().isoformat(),
        "lines": [{"code": "A02", "quantity": 1, "unit_price_fen": 500},
                  {"code": "A01", "quantity": 2, "unit_price_fen": 1000}]}


def test_key(name: str) -> bytes:
    """A published TEST ONLY key: parity-adjusted first 16 bytes of SHA-256('golden ' + name)."""
    return adjust_parity(hashlib.sha256(f"golden {name}".encode()).digest()[:16])


def tmks() -> dict[str, bytes]:
    return {t: test_key(f"tmk {t}") for t in (POS, KIOSK)}


def masters() -> dict[str, bytes]:
    return {u.value: test_key(f"card {u.value}") for u in demo_keys.CARD_MASTER_USAGES}


@dataclass
class GoldenDaemon:
    app: App
    home: Path

    async def submit_bill(self, card_no: str) -> dict[str, Any]:
        user, token = next(
            line.split(" ", 1)
            for line in (self.home / demo_medical.CREDENTIALS_FILE).read_text().splitlines()
            if line.startswith("h1 ")
        )
        url = f"http://127.0.0.1:{self.app.http_port}/his/v1/bills"
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.post(url, json={**BILL, "card_no": card_no}) as answer,
        ):
            assert answer.status == 201, await answer.text()
            return dict(await answer.json())

    def card(self) -> tuple[str, bytes]:
        with sqlite3.connect(self.home / "medswitch.db") as db:
            card_no, serial = db.execute(
                "SELECT card_no, application_serial FROM cards ORDER BY application_serial LIMIT 1"
            ).fetchone()
        return card_no, bytes.fromhex(serial).rjust(10, b"\0")

    def psam_terminal(self) -> bytes:
        with sqlite3.connect(self.home / "medswitch.db") as db:
            (number,) = db.execute(
                "SELECT psam_terminal_no FROM psams WHERE terminal_id = ?", (POS,)
            ).fetchone()
        return bytes.fromhex(number)


@asynccontextmanager
async def golden_daemon(tmp: Path) -> AsyncIterator[GoldenDaemon]:
    database = tmp / "medswitch.db"
    personal = await demo_keys.demo_personal_keys(tmp)  # names sealed at rest (not on the wire)
    await asyncio.to_thread(init_demo, database, 3, seed=1, personal=personal)
    demo_medical.provision(tmp, database, CLOCK)
    store = MemoryKeyStore()
    components = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]
    lmk = Lmk(components, kcv(combine(components)))
    hsm = SoftHsm(lmk, store, random_bytes=random.Random(SEED).randbytes)
    for terminal, key in tmks().items():
        await hsm.form_key(tmk_alias(terminal), KeyUsage.TMK, [Component(key)], now=CLOCK)
    for usage in demo_keys.CARD_MASTER_USAGES:
        await hsm.form_key(card_master_alias(usage), usage, [Component(masters()[usage.value])],
                           now=CLOCK)
    config = Config(home=str(tmp), database_url="", terminal=replace(ListenConfig(), port=0),
                    http=HttpConfig(port=0))
    app = await open_app(config, hsm, Sessions(store), clock=lambda: CLOCK)
    await app.start()
    try:
        yield GoldenDaemon(app, tmp)
    finally:
        await app.stop()


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_frame(payload, LengthFormat.BINARY2))
        await writer.drain()
        decoder = FrameDecoder(LengthFormat.BINARY2)
        for _ in range(1000):
            data = await asyncio.wait_for(reader.read(4096), timeout=10)
            assert data, "connection closed"
            frames = decoder.feed(data)
            if frames:
                return bytes(frames[0])
    finally:
        writer.close()
        await writer.wait_closed()
    raise AssertionError("no reply")


def framed(payload: bytes) -> str:
    """A frame as the golden files hold it: 2-byte length, then the payload, in hex."""
    return (len(payload).to_bytes(2, "big") + payload).hex().upper()


def tlv(elements: dict[int, bytes]) -> bytes:
    return b"".join(bytes([t, len(v)]) + v for t, v in sorted(elements.items()))


def parse_tlv(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        out[data[i]] = data[i + 2 : i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return out


@dataclass
class Side:
    """A terminal with clear TEST keys."""

    terminal_id: str
    institution: str
    tmk: bytes
    stan: int = 0
    batch: str = "000000"
    mak: bytes = b""
    tdk: bytes = b""
    frames: list[dict[str, str]] = field(default_factory=list)

    def payload(self, mti: str, fields: dict[int, Any], type_code: str, network: str) -> bytes:
        self.stan += 1
        envelope = {11: f"{self.stan:06d}", 41: self.terminal_id,
                    42: self.institution.ljust(15), 60: type_code + self.batch + network}
        ordered = dict(sorted({**envelope, **fields}.items()))
        if not self.mak:
            return CODEC.encode(Message(mti, ordered, TPDU, HEADER))
        payload = CODEC.encode(Message(mti, {**ordered, 64: bytes(8)}, TPDU, HEADER))
        return CODEC.with_mac(payload, cup_ecb(Des(self.mak[:8]), CODEC.mac_block(payload)))

    async def send(self, port: int, name: str, mti: str, fields: dict[int, Any],
                   type_code: str, network: str = "000") -> Message:
        request = self.payload(mti, fields, type_code, network)
        reply = await exchange(port, request)
        self.frames.append({"transaction": name, "terminal": self.terminal_id,
                            "request": framed(request), "reply": framed(reply)})
        message = CODEC.decode(reply)
        assert message.fields[39] == "00", (name, message.fields)
        return message

    async def sign_on(self, port: int) -> None:
        reply = await self.send(port, "sign_on", "0800", {}, "00", "004")
        keys, batch = reply.fields[62], reply.fields[60]
        assert isinstance(keys, bytes) and isinstance(batch, str)
        tmk = Des(self.tmk)
        self.mak = tmk.decrypt_ecb(keys[20:28])
        self.tdk = tmk.decrypt_ecb(keys[40:56])
        self.batch = batch[2:8]

    def field63(self, elements: dict[int, bytes]) -> bytes:
        plain = tlv(elements) + b"\x80"
        return Des(self.tdk).encrypt_cbc(plain + bytes(-len(plain) % 8))


def card_key(usage: KeyUsage, serial: bytes) -> bytes:
    return pboc.diversify(Des(masters()[usage.value]), pboc.card_factor(serial))


async def record(daemon: GoldenDaemon) -> list[dict[str, str]]:
    """Every golden exchange, in order, against a fresh golden daemon."""
    port = daemon.app.terminal_port
    card_no, serial = daemon.card()
    kiosk = Side(KIOSK, "centre", tmks()[KIOSK])
    await kiosk.sign_on(port)
    await kiosk.send(port, "echo", "0820", {}, "00", "301")
    await kiosk.send(port, "balance_inquiry", "0200",
                     {2: card_no, 3: "310000", 25: "00", 58: tlv({1: serial})}, "01")
    dlk = Des(card_key(KeyUsage.MK_LOAD, serial))
    session = Des(pboc.online_session_key(dlk, CARD_RANDOM, 0))
    mac1 = pboc_mac(session, pboc.load_mac1_data(0, LOAD_FEN, 1, KIOSK_NUMBER))
    load = {1: serial, 2: b"\x01", 3: b"\x01", 4: b"\x00", 5: CARD_RANDOM, 7: bytes(2),
            9: bytes(4), 10: LOAD_FEN.to_bytes(4, "big"), 12: mac1, 16: KIOSK_NUMBER}
    money = {2: card_no, 3: "600000", 4: f"{LOAD_FEN:012d}", 25: "91"}
    reply = await kiosk.send(port, "ed_load", "0200", {**money, 58: tlv(load)}, "45")
    field58 = reply.fields[58]
    assert isinstance(field58, bytes)
    answer = parse_tlv(field58)
    dtk = card_key(KeyUsage.MK_TAC, serial)
    result = LOAD_FEN.to_bytes(4, "big") + bytes(2) + LOAD_FEN.to_bytes(4, "big") + b"\x01"
    tac = pboc_mac(Des(pboc.tac_key(dtk)), result + KIOSK_NUMBER + answer[0x12])
    confirm = {**load, 0x0F: tac, 0x13: LOAD_FEN.to_bytes(4, "big")}
    await kiosk.send(port, "ed_load_confirm", "0220", {**money, 58: tlv(confirm)}, "45")

    bill = await daemon.submit_bill(card_no)
    total, personal = bill["split"]["total_fen"], bill["split"]["personal_account_fen"]
    pos = Side(POS, "h1", tmks()[POS])
    await pos.sign_on(port)
    bill_id = bill["bill_id"].encode()
    settle = {2: card_no, 3: "000000", 4: f"{total:012d}", 25: "00",
              58: tlv({1: serial, 2: b"\x01", 9: LOAD_FEN.to_bytes(4, "big")}),
              63: pos.field63({1: bill_id, 2: total.to_bytes(4, "big")})}
    await pos.send(port, "settlement", "0200", settle, "22")
    terminal = daemon.psam_terminal()
    when = pboc.bcd_datetime(CLOCK.replace(tzinfo=None))
    tac = pboc_mac(Des(pboc.tac_key(dtk)),
                   pboc.purchase_tac_data(personal, 5, terminal, PSAM_SERIAL, CLOCK))
    debit = tlv({1: serial, 2: b"\x01", 3: b"\x01", 4: b"\x00", 8: bytes(2),
                 10: personal.to_bytes(4, "big"), 11: b"\x05", 15: tac, 16: terminal,
                 17: PSAM_SERIAL.to_bytes(4, "big"), 18: when})
    paid = {2: card_no, 3: "000000", 4: f"{personal:012d}", 25: "00", 58: debit,
            63: pos.field63({1: bill_id})}
    await pos.send(port, "debit_advice", "0220", paid, "30")
    await pos.send(port, "batch_upload", "0320", paid, "30", "201")
    await pos.send(port, "batch_upload_end", "0320", {48: "0001"}, "00", "207")
    totals = f"{personal:012d}001" + "0" * 16 + "0" * 31
    await pos.send(port, "batch_settlement", "0500", {48: totals}, "00", "201")
    return kiosk.frames + pos.frames


def published() -> dict[str, Any]:
    """The TEST ONLY values the frames were made with (the daemon's and the terminal's)."""
    return {
        "test_only": "TEST ONLY keys, card and clock: never for production",
        "clock": CLOCK.isoformat(),
        "tmk": {t: k.hex().upper() for t, k in tmks().items()},
        "card_master_keys": {u: k.hex().upper() for u, k in masters().items()},
        "card_random": CARD_RANDOM.hex().upper(),
        "psam_serial": PSAM_SERIAL,
        "kiosk_terminal_number": KIOSK_NUMBER.hex().upper(),
        "bill": BILL,
    }


async def _write(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with golden_daemon(Path(tmp)) as daemon:
            frames = await record(daemon)
    out.write_text(json.dumps({**published(), "frames": frames}, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(_write(Path(sys.argv[1])))

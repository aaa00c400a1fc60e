"""The record book's day (issue 24): cards personalised with the record key (MK_RECORD) as well
as every other card key, and one POS terminal at each of three institutions."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from hsm import pboc, pinblock
from hsm.des import Des
from hsm.keys import KeyRef, KeyUsage
from ledger.personal import DATA_ALIAS, INDEX_ALIAS
from messages.card_records import HealthData
from messages.private import BillData, CardData
from messages.terminal import Settlement
from routing.cardkeys import card_master_alias
from simulators.card import CardState, VirtualCard
from switch.card_io.connection import CardConnection, DirectConnection
from switch.card_io.personalize import CardMasterKeys, PinEntry, personalize_card
from switch.card_io.record_book import write_health
from switch.card_io.signatures import SIGNING_ALIAS
from tests.support.daemon import Daemon, now
from tests.support.kiosk import PIN, card_master_keys, signed_on_kiosk
from tests.support.on_file import CardOnFile, PsamOnFile, psams_on_file
from tests.support.settlement import his_submit, medical_reference


def psams_of_three_institutions(database: Path) -> list[PsamOnFile]:
    chosen: dict[str, PsamOnFile] = {}
    for psam in psams_on_file(database):
        chosen.setdefault(psam.institution_id, psam)
    assert len(chosen) >= 3, "the demo deployment has three medical institutions"
    return list(chosen.values())[:3]


class BookKeys(NamedTuple):
    keys: CardMasterKeys
    clear_control: bytes  # the control master's clear value: the chip maker's blank cards
    pik: KeyRef
    clear_pik: bytes


async def book_keys(daemon: Daemon, *, record_key: bool = True, signing: bool = True) -> BookKeys:
    """Every card master key in the daemon's HSM, with card/MK_RECORD unless ``record_key`` is
    False, and the centre's signing key centre/CARD_SIGN (the holder and health data signed)
    unless ``signing`` is False."""
    keys, clear_control, pik, clear_pik = await card_master_keys(daemon)
    await centre_personal_keys(daemon)
    if record_key:
        alias = card_master_alias(KeyUsage.MK_RECORD)
        record = await daemon.hsm.generate_key(alias, KeyUsage.MK_RECORD, now=now())
        keys = replace(keys, record=record)
    if signing:
        sign = await daemon.hsm.generate_key(SIGNING_ALIAS, KeyUsage.CARD_SIGN, now=now())
        keys = replace(keys, signing=sign)
    return BookKeys(keys, clear_control, pik, clear_pik)


async def centre_personal_keys(daemon: Daemon) -> None:
    """PERSONAL_DATA and PERSONAL_INDEX in the daemon's key store (unless there already): the
    centre's copies of the visits it writes are sealed under them."""
    for alias, usage in (
        (DATA_ALIAS, KeyUsage.PERSONAL_DATA),
        (INDEX_ALIAS, KeyUsage.PERSONAL_INDEX),
    ):
        if not await daemon.store.list(alias):
            await daemon.hsm.generate_key(alias, usage, now=now())


def blank_book_card(bundle: BookKeys, on_file: CardOnFile) -> VirtualCard:
    serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
    control = pboc.diversify(Des(bundle.clear_control), pboc.card_factor(serial))
    return VirtualCard(CardState.blank(serial, control))


async def personalise_book_card(
    daemon: Daemon,
    conn: CardConnection,
    bundle: BookKeys,
    on_file: CardOnFile,
    health: HealthData | None = None,
) -> None:
    """Keys (the DRK among them when the bundle has MK_RECORD), files and the PIN, through the
    daemon's HSM, over whatever connection reaches the card; and ``health`` in EF 0019 (with
    its data check code) when given."""
    serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
    clear_block = pinblock.encode_format0(PIN, on_file.card_no)
    entry = PinEntry(bundle.pik, Des(bundle.clear_pik).encrypt_ecb(clear_block), on_file.card_no)
    public = bytes(10) + serial + bytes(10)
    keys = bundle.keys
    await personalize_card(conn, daemon.hsm, keys, serial, public, bytes(39), bytes(60), entry)
    if health is not None:
        await write_health(conn, daemon.hsm, keys, serial, health)


async def issue_book_cards(
    daemon: Daemon,
    cards: list[CardOnFile],
    *,
    record_key: bool = True,
    signing: bool = True,
    health: HealthData | None = None,
) -> tuple[list[CardConnection], CardMasterKeys]:
    """Virtual cards personalised through the daemon's HSM, with the record key DRK (from a
    generated card/MK_RECORD) unless ``record_key`` is False, the holder data signed unless
    ``signing`` is False, and ``health`` (initial health data, EF 0019) when given."""
    bundle = await book_keys(daemon, record_key=record_key, signing=signing)
    connections: list[CardConnection] = []
    for on_file in cards:
        conn = DirectConnection(blank_book_card(bundle, on_file))
        conn.connect()
        await personalise_book_card(daemon, conn, bundle, on_file, health)
        connections.append(conn)
    return connections, bundle.keys


class KioskSettled(NamedTuple):
    card_no: str
    total_fen: int  # the HIS API's split of the bill
    split: BillData  # what the approval's field 62 carried back


async def settle_first_card(
    daemon: Daemon, his_bill_no: str, lines: list[dict[str, Any]], diagnoses: str
) -> KioskSettled:
    """The first card on file settles a bill of ``lines`` (submitted through the HIS API) at the
    first PSAM's terminal, signed on as a kiosk; the settlement is approved with a bill."""
    on_file, psam = daemon.first_card(), daemon.first_psam()
    token = await asyncio.to_thread(medical_reference, daemon, psam.institution_id)
    body = {"his_bill_no": his_bill_no, "card_no": on_file.card_no,
            "service_date": now().date().isoformat(), "lines": lines}  # fmt: skip
    submitted = await asyncio.to_thread(
        his_submit, daemon.app.http_port, psam.institution_id, token, body
    )
    total_fen = submitted["split"]["total_fen"]
    async with daemon.terminal(psam.terminal_id) as pos:
        await signed_on_kiosk(daemon, pos, psam.institution_id)
        assert pos.keys is not None and pos.keys.tdk is not None
        plain = BillData(bill_id=submitted["bill_id"], diagnoses=diagnoses).build()
        bill = await pos.hsm.encrypt_data(pos.keys.tdk, plain)
        reply = await pos.exchange(
            Settlement(**pos.envelope(), pan=on_file.card_no, amount_fen=total_fen,
                       card=CardData(challenge=bytes.fromhex("01020304")), bill=bill)
        )  # fmt: skip
        assert reply.response_code == "00" and reply.bill is not None
        split = BillData.parse(await pos.hsm.decrypt_data(pos.keys.tdk, reply.bill))
    return KioskSettled(on_file.card_no, total_fen, split)


def terminal_log_fields(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    """The structured fields of the medswitch.terminal log lines among ``records``."""
    return [
        r.fields  # type: ignore[attr-defined]
        for r in records
        if r.name == "medswitch.terminal" and isinstance(getattr(r, "fields", None), dict)
    ]


class TamperedReader:
    """A card reader between the POS and the card that alters the centre's scripts on their way
    (a tampered terminal): a command of class 04 whose INS is in ``instructions`` has one data
    byte changed (the record's department, or the health file's blood type), its MAC kept."""

    def __init__(self, card: CardConnection, instructions: set[int]) -> None:
        self.card = card
        self.instructions = instructions
        self.altered = 0  # how many scripts it altered

    @property
    def reader_name(self) -> str:
        return self.card.reader_name

    def connect(self) -> bytes:
        return self.card.connect()

    def disconnect(self) -> None:
        self.card.disconnect()

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if apdu[0] == 0x04 and apdu[1] in self.instructions and len(apdu) > 20:
            changed = bytearray(apdu)
            changed[5 + 14] ^= 0x01  # visit: department; health: an allergy's letter
            self.altered += 1
            return self.card.transmit(bytes(changed))
        return self.card.transmit(apdu)


def his_call(
    port: int, institution: str, token: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """One HIS API request with the institution's credential: (status, the JSON answer)."""
    credentials = base64.b64encode(f"{institution}:{token}".encode()).decode()
    headers = {"Authorization": "Basic " + credentials}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/his/v1{path}", data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


async def next_second() -> None:
    """Until the test clock (whole seconds, as the daemon's) has moved on."""
    start = now()
    for _ in range(40):
        if now() != start:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the clock did not move")

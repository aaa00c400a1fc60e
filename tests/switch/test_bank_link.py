"""The inbound bank link end to end: a bank's counter (simulators.bank.BankAcquirer) with a
personalised virtual card in its reader, the daemon on 127.0.0.1, the ledger.

A counter load or unload changes the card and the ledger exactly as a kiosk's does; a bad MAC
is answered A0 and moves nothing; a loss report blocks the card at its next kiosk load, and
after unloss the card is unblocked by script at its next online contact."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop

from hsm import pinblock
from hsm.des import Des, adjust_parity
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component
from ledger.demo import init_demo
from ledger.kinds import AccountKind, account_id
from messages import bank
from messages.bank import CounterLoad
from messages.codec import Message
from messages.framing import LengthFormat, encode_frame
from messages.outcome import Outcome
from messages.pretty import mask_pan
from messages.private import CardData
from messages.terminal import EdLoad, SignOn, SignOnReply
from simulators import terminal_card
from simulators.bank import CODEC, BankAcquirer, mac_payload
from switch.app import open_app
from switch.card_io.connection import ApduError, CardConnection
from switch.config import BankConfig, Config, HttpConfig, ListenConfig
from switch.demo.keys import demo_personal_keys
from switch.logs import JsonFormatter
from switch.sessions import Sessions
from tests.support.daemon import Daemon, Terminal, new_hsm, now
from tests.support.kiosk import PIN, card_balance, issue_card, kiosk_load
from tests.support.on_file import CardOnFile, first_card

ACQUIRER = "01020000"
ZAK_ALIAS = "bank/01020000/ZAK"
KIOSK = "K0000001"


@asynccontextmanager
async def bank_daemon(
    tmp: Path, allowed_peers: tuple[str, ...] = ("127.0.0.1",)
) -> AsyncIterator[tuple[Daemon, KeyRef]]:
    """The daemon over a demo deployment with its bank link on port 0, and the link's ZAK
    (the bank holds the same key: here the daemon's HSM stands in for the bank's)."""
    await asyncio.to_thread(
        init_demo, tmp / "medswitch.db", 3, personal=await demo_personal_keys(tmp)
    )
    store = MemoryKeyStore()
    hsm = new_hsm(store)
    zak = await hsm.generate_key(ZAK_ALIAS, KeyUsage.ZAK, now=now())
    config = Config(
        home=str(tmp),
        terminal=replace(ListenConfig(), port=0),
        http=HttpConfig(port=0),
        bank=BankConfig(
            enabled=True,
            port=0,
            acquirer_id=ACQUIRER,
            zak_alias=ZAK_ALIAS,
            allowed_peers=allowed_peers,
        ),
    )
    app = await open_app(config, hsm, Sessions(store), clock=now)
    await app.start()
    try:
        yield Daemon(app, hsm, store, tmp), zak
    finally:
        await app.stop()


@asynccontextmanager
async def counter(daemon: Daemon, zak: KeyRef) -> AsyncIterator[BankAcquirer]:
    acquirer = await BankAcquirer.connect(
        "127.0.0.1", daemon.app.bank_port, daemon.hsm, zak, ACQUIRER, clock=now
    )
    try:
        yield acquirer
    finally:
        await acquirer.close()


Scenario = Callable[[Daemon, KeyRef], Awaitable[None]]


def run(
    tmp_path: Path, scenario: Scenario, allowed_peers: tuple[str, ...] = ("127.0.0.1",)
) -> None:
    async def main() -> None:
        async with bank_daemon(tmp_path, allowed_peers) as (daemon, zak):
            await scenario(daemon, zak)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


async def balances(daemon: Daemon, on_file: CardOnFile) -> tuple[int, int, int, int]:
    """Card ED shadow, loads in doubt, unloads in doubt, personal fund."""
    ledger = daemon.app.ledger
    assert ledger is not None
    ids = [
        account_id(AccountKind.CARD_ED_SHADOW, on_file.serial),
        account_id(AccountKind.ED_LOADS_IN_DOUBT, on_file.serial),
        account_id(AccountKind.UNLOADS_IN_DOUBT, on_file.serial),
        account_id(AccountKind.PERSONAL_FUND, on_file.cardholder_id),
    ]
    found = await ledger.balances(ids)
    a, b, c, d = (found[i].balance_fen if i in found else 0 for i in ids)
    return a, b, c, d


async def signed_on_kiosk(terminal: Terminal) -> None:
    terminal.institution_id = "centre".ljust(15)
    reply = await terminal.exchange(SignOn(**terminal.envelope()), mac=False)
    assert isinstance(reply, SignOnReply) and reply.keys is not None, reply
    terminal.keys = await terminal.hsm.accept_sign_on(
        terminal.tmk, reply.keys.build(), f"pos/{terminal.terminal_id}", now=now()
    )
    terminal.batch = reply.batch


def test_counter_load_and_unload_move_card_and_ledger_alike(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        conn = await issue_card(daemon, on_file)
        *_, fund_before = await balances(daemon, on_file)
        async with counter(daemon, zak) as bank_counter:
            assert (await bank_counter.sign_on()).response_code == "00"
            assert (await bank_counter.echo()).response_code == "00"
            reply, confirmation = await bank_counter.ed_load(conn, on_file.card_no, PIN, 10_000)
            assert reply.response_code == "00" and reply.mac is not None
            assert confirmation is not None and confirmation.response_code == "00"
            assert card_balance(conn) == 10_000
            assert await balances(daemon, on_file) == (10_000, 0, 0, fund_before - 10_000)
            reply, confirmation = await bank_counter.ed_unload(conn, on_file.card_no, PIN, 3_000)
            assert reply.response_code == "00"
            assert confirmation is not None and confirmation.response_code == "00"
            assert card_balance(conn) == 7_000
            assert await balances(daemon, on_file) == (7_000, 0, 0, fund_before - 7_000)
            shown = await bank_counter.inquiry(on_file.card_no)
            assert shown.response_code == "00" and shown.balances is not None
            amounts = {b.account_type: b.amount_fen for b in shown.balances}
            assert amounts == {"91": fund_before - 7_000, "92": 7_000, "93": 0}
            # More than the card holds: the card itself refuses INITIALIZE (9401).
            with pytest.raises(ApduError):
                await bank_counter.ed_unload(conn, on_file.card_no, PIN, 7_001)
        assert await balances(daemon, on_file) == (7_000, 0, 0, fund_before - 7_000)
        bank_lines = [
            JsonFormatter().format(r) for r in caplog.records if r.name == "medswitch.bank"
        ]
        assert len(bank_lines) >= 6 and all(on_file.card_no not in line for line in bank_lines)
        assert mask_pan(on_file.card_no) in "\n".join(bank_lines)

    run(tmp_path, scenario)


def test_a_peer_not_allowed_is_not_answered(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        async with counter(daemon, zak) as bank_counter:
            bank_counter.timeout_s = 2
            with pytest.raises(ConnectionError):  # refused at accept: closed, no answer
                await bank_counter.sign_on()

    run(tmp_path, scenario, allowed_peers=("192.0.2.1",))


def test_a_request_mti_the_interface_does_not_define_is_refused_30(tmp_path: Path) -> None:
    """A request the bank starts is served or refused with a code (issue 20): an MTI the
    interface does not define (0600) is answered 0610 30 echoing the envelope, on a connection
    that stays open; an MTI that is not digits has no response MTI: the connection is closed."""
    envelope = {7: "1207120000", 11: "000042", 32: ACQUIRER, 70: "301"}
    undefined = CODEC.encode(Message("0600", envelope))
    unreadable = b"AB" + undefined[2:]

    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.app.bank_port)
        try:
            for _ in range(2):  # answered each time: the connection stays open
                writer.write(encode_frame(undefined, LengthFormat.ASCII4))
                await writer.drain()
                head = await asyncio.wait_for(reader.readexactly(4), timeout=10)
                answer = CODEC.decode(await reader.readexactly(int(head)))
                assert answer.mti == "0610" and answer.fields[39] == "30"
                assert {n: answer.fields.get(n) for n in envelope} == envelope
                assert 128 not in answer.fields
            writer.write(encode_frame(unreadable, LengthFormat.ASCII4))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(4096), timeout=10) == b""
        finally:
            writer.close()
        async with counter(daemon, zak) as bank_counter:  # the link serves on
            assert (await bank_counter.sign_on()).response_code == "00"

    run(tmp_path, scenario)


def test_bad_mac_is_answered_a0_and_moves_nothing(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        conn = await issue_card(daemon, on_file)
        before = await balances(daemon, on_file)
        async with counter(daemon, zak) as bank_counter:
            terminal_card.open_application(conn, PIN)
            data = terminal_card.initialize_load(
                conn, bytes.fromhex(on_file.serial).rjust(10, b"\0"), 5_000, bytes(6)
            )
            load = CounterLoad(
                **bank_counter.envelope(), pan=on_file.card_no, amount_fen=5_000, card=data
            )
            # Before sign-on a financial message is refused (91), MACed.
            refused = await bank_counter.exchange(load)
            assert refused.response_code == Outcome.ISSUER_INOPERATIVE.code
            assert (await bank_counter.sign_on()).response_code == "00"
            bad = await bank_counter.exchange(replace(load, stan="000900"), bad_mac=True)
            assert bad.response_code == Outcome.MAC_ERROR.code and bad.mac is None
            unmaced = await bank_counter.exchange(replace(load, stan="000901"), mac=False)
            assert unmaced.response_code == Outcome.MAC_ERROR.code
            assert await balances(daemon, on_file) == before
            # A retransmission gets the first reply byte for byte and moves nothing more.
            payload = await mac_payload(daemon.hsm, zak, bank.build(replace(load, stan="000902")))
            first = await bank_counter.send(payload)
            again = await bank_counter.send(payload)
            assert first == again and bank.parse(CODEC.decode(first)).response_code == "00"
            other = await bank_counter.exchange(replace(load, stan="000902", amount_fen=5_001))
            assert other.response_code == Outcome.DUPLICATE.code
            shadow, loads_in_doubt, _, fund = await balances(daemon, on_file)
            assert (shadow, loads_in_doubt, fund) == (before[0], 5_000, before[3] - 5_000)
            # A frame the codec cannot read: 30, echoing the envelope it could read.
            broken = payload[:-20]  # field 122 cut short
            answer = CODEC.decode(await bank_counter.send(broken))
            assert answer.mti == "0210" and answer.fields[39] == Outcome.FORMAT_ERROR.code
            assert answer.fields.get(11) == "000902" and answer.fields.get(32) == ACQUIRER

    run(tmp_path, scenario)


async def _blocked_card_asks(kiosk: Terminal, conn: CardConnection, on_file: CardOnFile) -> str:
    """A kiosk with a card whose application is blocked: INITIALIZE is refused, so it asks the
    centre with the card's serial and a challenge; the centre's script goes to the card."""
    conn.transmit(bytes.fromhex("00A4040006D15600000503"))
    challenge, sw = conn.transmit(terminal_card.GET_CHALLENGE)
    assert sw == 0x9000
    data = CardData(app_serial=bytes.fromhex(on_file.serial).rjust(10, b"\0"), challenge=challenge)
    reply = await kiosk.exchange(
        EdLoad(**kiosk.envelope(), pan=on_file.card_no, amount_fen=100, card=data)
    )
    assert reply.card is not None and reply.card.issuer_script is not None
    _, sw = conn.transmit(reply.card.issuer_script)
    assert sw == 0x9000, f"{sw:04X}"
    return reply.response_code


def test_loss_report_blocks_the_card_and_unloss_unblocks_it(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        db = daemon.home / "medswitch.db"
        on_file = first_card(db)
        conn = await issue_card(daemon, on_file)
        cards = daemon.app.cards
        assert cards is not None
        version = cards.blacklist_version()
        async with counter(daemon, zak) as bank_counter, daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(kiosk)
            assert (await bank_counter.sign_on()).response_code == "00"
            reply = await bank_counter.card_service("loss_report", on_file.card_no)
            assert reply.response_code == "00"
            assert cards.blacklist_changes(version, 10) == [(version + 1, "A", on_file.serial)]
            again = await bank_counter.card_service("loss_report", on_file.card_no)
            assert again.response_code == "00" and cards.blacklist_version() == version + 1
            # The card's next online use: refused 41 with the block script, run on the card.
            refused, _ = await kiosk_load(kiosk, conn, on_file, 1_000)
            assert refused.response_code == Outcome.LOST_CARD.code
            _, sw = conn.transmit(bytes.fromhex("805C000104"))
            assert sw == 0x6A81  # the application is blocked
            reply = await bank_counter.card_service("unloss", on_file.card_no)
            assert reply.response_code == "00"
            assert cards.blacklist_changes(version + 1, 10) == [(version + 2, "D", on_file.serial)]
            # Online again: the blocked card gets APPLICATION UNBLOCK, then loads as before.
            code = await _blocked_card_asks(kiosk, conn, on_file)
            assert code == Outcome.RESTRICTED_CARD.code
            loaded, confirmation = await kiosk_load(kiosk, conn, on_file, 1_000)
            assert loaded.response_code == "00"
            assert confirmation is not None and confirmation.response_code == "00"
            unknown = await bank_counter.card_service("loss_report", "6212349999999999")
            assert unknown.response_code == Outcome.INVALID_CARD.code
        assert card_balance(conn) == 1_000
        with sqlite3.connect(db) as connection:
            (status,) = connection.execute(
                "SELECT status FROM cards WHERE card_no = ?", (on_file.card_no,)
            ).fetchone()
        assert status == "active"

    run(tmp_path, scenario)


def test_pin_reload_and_unblock_that_the_card_accepts(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        conn = await issue_card(daemon, on_file)
        clear_zpk = adjust_parity(secrets.token_bytes(16))  # the counters' PIN pads hold it
        zpk = [Component(clear_zpk)]
        await daemon.hsm.form_key(ZAK_ALIAS.replace("ZAK", "ZPK"), KeyUsage.ZPK, zpk, now=now())

        def under_zpk(pin: str) -> bytes:
            return Des(clear_zpk).encrypt_ecb(pinblock.encode_format0(pin, on_file.card_no))

        async with counter(daemon, zak) as bank_counter:
            assert (await bank_counter.sign_on()).response_code == "00"
            reply, sw = await bank_counter.pin_reload(
                conn, on_file.card_no, "654321", under_zpk("654321")
            )
            assert reply.response_code == "00" and sw == 0x9000
            terminal_card.open_application(conn, "654321")  # the card takes the new PIN
            for _ in range(10):  # wrong PINs until the card blocks its PIN
                conn.transmit(bytes.fromhex("00A4040006D15600000503"))
                _, sw = conn.transmit(bytes.fromhex("0020000003111111"))
                if sw == 0x6983:
                    break
            assert sw == 0x6983
            reply, sw = await bank_counter.pin_unblock(conn, on_file.card_no, under_zpk("246810"))
            assert reply.response_code == "00" and sw == 0x9000
            terminal_card.open_application(conn, "246810")
            assert "246810" not in repr(reply)  # nothing of the PIN comes back

    run(tmp_path, scenario)


def test_a_load_resent_after_the_connection_dropped_moves_money_once(tmp_path: Path) -> None:
    """The counter's connection is cut with a load in flight; the counter reconnects and sends
    it again: the original reply (the same MAC2), the fund debited once."""

    async def scenario(daemon: Daemon, zak: KeyRef) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        conn = await issue_card(daemon, on_file)
        *_, fund_before = await balances(daemon, on_file)
        terminal_card.open_application(conn, PIN)
        serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
        data = terminal_card.initialize_load(conn, serial, 4_000, bytes(6))
        async with counter(daemon, zak) as first:
            assert (await first.sign_on()).response_code == "00"
            load = CounterLoad(**first.envelope(), pan=on_file.card_no, amount_fen=4_000, card=data)
            payload = await mac_payload(daemon.hsm, zak, bank.build(load))
            first.writer.write(encode_frame(payload, LengthFormat.ASCII4))
            await first.writer.drain()
        await asyncio.sleep(0.2)  # the daemon finishes it; its reply has nowhere to go
        async with counter(daemon, zak) as second:
            answer = bank.parse(CODEC.decode(await second.send(payload)))
            again = bank.parse(CODEC.decode(await second.send(payload)))
        assert answer == again and answer.response_code == "00"
        assert answer.card is not None and answer.card.mac2 and answer.card.card_datetime
        terminal_card.credit_for_load(conn, answer.card.card_datetime, answer.card.mac2)
        assert card_balance(conn) == 4_000
        shadow, loads_in_doubt, _, fund = await balances(daemon, on_file)
        assert (shadow, loads_in_doubt, fund_before - fund) == (0, 4_000, 4_000)

    run(tmp_path, scenario)

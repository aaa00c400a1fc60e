"""Bank link dialects through the daemon (specs/bank-interface.md, "Dialects"): the golden
savings debits, the settings refused at start, a bank that MACs no response, a response whose
required MAC is missing, an unsigned sign-off, and a format error that echoes the envelope."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import uvloop

from hsm import pinblock
from hsm.des import Des
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from messages import bank
from messages.bank import BankEcho, BankSignOff, KeyChange, SavingsDebit
from messages.codec import Message
from messages.framing import FrameDecoder, LengthFormat
from messages.private import Purse
from simulators import terminal_card
from simulators.bank import BankAcquirer, IssuerRules
from simulators.bank_keys import CODEC
from switch.bank.dialect import PRESETS, Settings, dialect_of
from switch.bank.link import BankLinkClient, OutboundSettings
from switch.bank.wire import LinkWire
from switch.config import BankConfig, ConfigError, load
from switch.listener import Listener
from switch.listener_settings import listener_settings
from tests.support import bank_golden
from tests.support.bank import BANK, BankDaemon, bank_daemon, until
from tests.support.daemon import new_hsm, now
from tests.support.kiosk import PIN, issue_card
from tests.support.on_file import first_card

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples" / "frames.json"


def run(tmp: Path, scenario: object, **bank: object) -> None:
    async def main() -> None:
        async with bank_daemon(tmp, **bank) as daemon:  # type: ignore[arg-type]
            await scenario(daemon)  # type: ignore[operator]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


async def counter_for(bank: BankDaemon) -> BankAcquirer:
    app = bank.app
    counter = await BankAcquirer.connect(
        "127.0.0.1", app.bank_port, bank.daemon.hsm, bank.zak_in, BANK
    )
    assert (await counter.sign_on()).response_code == "00"
    return counter


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_centre_encodes_each_golden_savings_debit(preset: str) -> None:
    frozen = json.loads(EXAMPLES.read_text())["bank_dialects"]["frames"][preset]
    assert asyncio.run(bank_golden.frame(preset)).hex().upper() == frozen


def test_dialect_settings_are_checked_at_start(tmp_path: Path) -> None:
    config = tmp_path / "medswitch.toml"
    config.write_text('[bank]\ndialect = "jpos-iso87a"\nresponse_mac = "none"\n')
    bank = load(config, {}).bank
    dialect = dialect_of(bank)
    assert (dialect.bitmap, dialect.response_mac.value) == ("hex", "none")
    config.write_text('[bank]\nlength_header = "binary3"\n')
    with pytest.raises(ConfigError, match=r"bank\.length_header must be one of binary2, "):
        load(config, {})
    config.write_text('[bank]\n[[bank.links]]\ndialect = "iso93"\n')
    with pytest.raises(ConfigError, match=r"bank.links\[0\].dialect must be one of medswitch"):
        load(config, {})
    with pytest.raises(ValueError, match="omit_fields"):
        dialect_of(Settings(omit_fields=("F2",)))
    assert dialect_of(Settings(omit_fields=("F49", "12"))).omit_fields == {12, 49}


def test_a_bank_that_macs_no_response_completes_an_ep_load(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        bank.issuer.rules = IssuerRules(unsigned_replies=True)
        on_file = first_card(bank.database)
        conn = await issue_card(bank.daemon, on_file)
        block = Des(bank.clear_zpk).encrypt_ecb(pinblock.encode_format0(PIN, on_file.card_no))
        counter = await counter_for(bank)
        try:
            reply, confirmation = await counter.ep_load(conn, on_file.card_no, PIN, 7_000, block)
            assert reply.response_code == "00", reply
            assert confirmation is not None and confirmation.response_code == "00"
            assert terminal_card.balance(conn, Purse.EP) == 7_000
            debit = next(r for r in bank.issuer.received if r.mti == "0200")
            assert debit.typed.mac is not None  # the centre still MACs its requests
        finally:
            await counter.close()

    run(tmp_path, scenario, response_mac="none")


def test_a_missing_response_mac_is_logged_as_missing_and_times_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(bank: BankDaemon) -> None:
        bank.issuer.rules = IssuerRules(unsigned_replies=True)
        on_file = first_card(bank.database)
        conn = await issue_card(bank.daemon, on_file)
        block = Des(bank.clear_zpk).encrypt_ecb(pinblock.encode_format0(PIN, on_file.card_no))
        counter = await counter_for(bank)
        try:
            with caplog.at_level(logging.WARNING, "medswitch.bank.out"):
                reply, _ = await counter.ep_load(conn, on_file.card_no, PIN, 3_000, block)
            assert reply.response_code == "98"  # as for any unanswered debit: reversed
            lines = [r.getMessage() for r in caplog.records if "0210" in r.getMessage()]
            assert any("carries no MAC (missing)" in line for line in lines), lines
            assert not any("fails its MAC" in line for line in lines)
            bank.issuer.rules = IssuerRules()  # MACed again: the reversal is acknowledged
            await until(lambda: bank.reversal_statuses() == ["acknowledged"])
        finally:
            await counter.close()

    run(tmp_path, scenario)  # medswitch: response_mac = "required"


def test_an_unsigned_sign_off_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(bank: BankDaemon) -> None:
        counter = await counter_for(bank)
        try:
            sign_off = BankSignOff(**counter.envelope())
            with caplog.at_level(logging.WARNING, "medswitch.bank"):
                assert (await counter.exchange(sign_off, mac=False)).response_code == "A0"
            assert any("F70=002: no MAC (missing)" in r.getMessage() for r in caplog.records)
            # an unsigned key change (F70 101) likewise: refused A0 and logged
            offered = KeyChange(**counter.envelope(), keys=f"ZAK={'A' * 32}/ABCDEF")
            with caplog.at_level(logging.WARNING, "medswitch.bank"):
                assert (await counter.exchange(offered, mac=False)).response_code == "A0"
            assert any("F70=101: no MAC (missing)" in r.getMessage() for r in caplog.records)
            echo = await counter.exchange(BankEcho(**counter.envelope()), mac=False)
            assert echo.response_code == "00"  # still signed on
            signed = BankSignOff(**counter.envelope())
            assert (await counter.exchange(signed)).response_code == "00"
        finally:
            await counter.close()

    run(tmp_path, scenario)


def test_a_format_error_echoes_the_envelope(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        counter = await counter_for(bank)
        try:
            envelope = {7: "1207063015", 11: "004711", 32: BANK, 70: "999"}
            answer = await counter.send(CODEC.encode(Message("0800", envelope)))
            reply = CODEC.decode(answer)
            assert reply.mti == "0810"
            assert reply.fields == {**envelope, 39: "30"}
        finally:
            await counter.close()

    run(tmp_path, scenario)


def test_an_outbound_link_in_bcd_without_length_header_and_method2_padding() -> None:
    """The outbound client in a dialect none of the presets has (BCD numerics and MTI, hex
    bitmaps and F128, no length header, MAC padding method 2) against a bank built on the same
    dialect: sign-on, a debit whose MAC verifies, the bank's own echo answered."""
    dialect = dialect_of(
        Settings(
            numerics="bcd",
            length_header="none",
            bitmap="hex",
            binary_fields="hex",
            mac_padding="method2",
            mac_field="64",
        )
    )

    async def main() -> None:
        hsm = new_hsm(MemoryKeyStore())
        zak = await hsm.generate_key("bank/x/ZAK", KeyUsage.ZAK, now=now())
        wire = LinkWire(dialect, hsm)
        seen: list[Message] = []
        echoed: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def bank_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = wire.decoder(8192)
            while data := await reader.read(4096):
                for payload in decoder.feed(data):
                    message = wire.codec.decode(payload)
                    if message.mti == "0810":
                        echoed.set_result(message)
                        continue
                    seen.append(message)
                    assert (await wire.check(payload, message, [zak])).ok
                    reply = bank.reply_to(bank.parse(message), "00")
                    signed = message.mti != "0800" and message.fields[4] != "000000000999"
                    key = zak if signed else None
                    writer.write(wire.frame(await wire.seal(reply, key)))
                    if message.fields.get(70) == "001":  # and the bank echoes at once
                        echo = BankEcho(stan="000777", transmitted="1207063015", acquirer_id="1")
                        writer.write(wire.frame(await wire.seal(echo, None)))

        server = await asyncio.start_server(bank_host, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = OutboundSettings("127.0.0.1", port, "09990000", 1.0, dialect=dialect)
        drops: list[str] = []
        client = BankLinkClient(settings, hsm, zak, now, on_drop=drops.append)
        client.start()
        try:
            assert await client.wait_up(5)
            assert (await asyncio.wait_for(echoed, 5)).fields[39] == "00"
            block = bytes(range(8))
            debit = SavingsDebit(
                **client.envelope(), pan="6212340000000019", amount_fen=100, pin_block=block
            )
            assert (await client.request(debit)).response_code == "00"
            sent = seen[-1]
            assert (sent.mti, sent.fields[52], sent.fields[49]) == ("0200", block, "156")
            assert 64 in sent.fields and 128 not in sent.fields  # no field above 64
            unsigned = SavingsDebit(
                **client.envelope(), pan="6212340000000019", amount_fen=999, pin_block=block
            )  # the bank answers it without a MAC
            with pytest.raises(TimeoutError):
                await client.request(unsigned)
            assert drops == ["missing_mac"]
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_listener_without_length_header_reads_messages_by_their_fields() -> None:
    """`length_header = "none"` inbound: the listener cuts the stream where each message's
    fields end (two messages in one write, one split over two writes) and answers each."""
    codec = dialect_of(Settings(length_header="none")).codec()
    first = codec.encode(Message("0800", {7: "1207063015", 11: "000001", 32: BANK, 70: "001"}))
    second = codec.encode(Message("0800", {7: "1207063015", 11: "000002", 32: BANK, 70: "301"}))

    async def answer(payload: bytes, peer: str) -> bytes:
        message = codec.decode(payload)
        return codec.encode(Message("0810", {**message.fields, 39: "00"}))

    async def main() -> None:
        settings = listener_settings(
            BankConfig(port=0), LengthFormat.NONE, measure=codec.frame_length
        )
        listener = Listener(settings, answer)
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(first + second[:9])
            await writer.drain()
            writer.write(second[9:])
            decoder = FrameDecoder(LengthFormat.NONE, measure=codec.frame_length)
            replies: list[bytes] = []
            for _ in range(20):
                if len(replies) == 2:
                    break
                replies += decoder.feed(await asyncio.wait_for(reader.read(4096), 5))
            assert [codec.decode(r).fields[11] for r in replies] == ["000001", "000002"]
            writer.close()
        finally:
            await listener.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_mac_policy_by_message_class() -> None:
    """Financial requests and responses by their own settings; network management by
    network_mac, a sign-off or key change request at least required unless it is none."""
    medswitch = PRESETS["medswitch"]
    assert medswitch.policy("0200").value == "required"
    assert medswitch.policy("0210").value == "required"
    assert medswitch.policy("0800", "301").value == "optional"
    assert medswitch.policy("0800", "002").value == "required"
    assert medswitch.policy("0810", "002").value == "optional"
    assert (medswitch.signs("0800", "001"), medswitch.signs("0800", "101")) == (False, True)
    relaxed = dialect_of(Settings(network_mac="none", request_mac="optional"))
    assert relaxed.policy("0800", "002").value == "none" and not relaxed.signs("0800", "002")
    assert relaxed.policy("0420").value == "optional" and relaxed.signs("0420")
    strict = dialect_of(Settings(network_mac="required", field7="local"))
    assert strict.signs("0800", "301") and strict.policy("0810", "301").value == "required"
    clock = datetime(2026, 12, 7, 14, 30, 15, tzinfo=timezone(timedelta(hours=8)))
    assert (strict.transmitted(clock), medswitch.transmitted(clock)) == (
        "1207143015",
        "1207063015",
    )


def test_the_centre_encodes_the_golden_key_change() -> None:
    """specs/examples/frames.json → bank_dialects.key_change: the centre's offer (its F48 from
    LinkKeys.offer) and its MAC make the frozen bytes."""
    frozen = json.loads(EXAMPLES.read_text())["bank_dialects"]["key_change"]["frame"]
    assert asyncio.run(bank_golden.key_change_frame()).hex().upper() == frozen

"""The daemon over real sockets on 127.0.0.1: sign-on, MACs, and every refusal path."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvloop

from ledger.core import Health
from ledger.writer.process import ProcessWriter, Restarts
from messages.codec import Message
from messages.framing import LengthFormat, encode_frame
from messages.outcome import Outcome
from messages.terminal import (
    BlacklistDownload,
    BlacklistReply,
    Echo,
    ParameterDownload,
    ParameterReply,
    SignOn,
    SignOnReply,
)
from tests.support.daemon import (
    CODEC,
    Daemon,
    Terminal,
    running_daemon,
)

TERMINALS = {"POS00001": "pos", "KIOSK001": "kiosk"}


async def sign_on(terminal: Terminal) -> SignOnReply:
    return await terminal.sign_on()  # its secure module checks the keys' check values


def run(tmp_path: Path, scenario, backend: str = "sqlite") -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running_daemon(tmp_path, TERMINALS, backend=backend) as daemon:
            await scenario(daemon)

    # The daemon runs on uvloop in production (medswitch serve); test it there.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=60))


def test_sign_on_gives_working_keys_a_new_batch_and_the_clock(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            reply = await sign_on(pos)
            assert reply.keys is not None and reply.keys.tdk is not None  # 60-byte layout
            assert reply.batch == "000002"
            assert reply.host_date is not None and len(reply.host_date) == 4
            assert reply.host_time is not None and len(reply.host_time) == 6
            assert reply.tpdu == bytes.fromhex("6000000003")  # destination and source swapped
            echo = await pos.exchange(Echo(**pos.envelope()))
            assert echo.response_code == "00"
            assert echo.mac is not None  # MACed under the new MAK, checked by exchange()

    run(tmp_path, scenario, backend)


def test_refusals(tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="medswitch.terminal")

    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            before = await pos.exchange(Echo(**pos.envelope()))
            assert before.response_code == Outcome.RE_SIGN_ON.code  # not signed on yet
            await sign_on(pos)
            bad = await pos.exchange(Echo(**pos.envelope()), bad_mac=True)
            assert bad.response_code == Outcome.MAC_ERROR.code
            no_mac = await pos.exchange(Echo(**pos.envelope()), mac=False)
            assert no_mac.response_code == Outcome.MAC_ERROR.code
            pos.batch = "000009"
            assert (await pos.exchange(Echo(**pos.envelope()))).response_code == "77"
        async with daemon.terminal("POS00099") as stranger:
            reply = await stranger.exchange(SignOn(**stranger.envelope()), mac=False)
            assert reply.response_code == Outcome.TERMINAL_NOT_REGISTERED.code
        async with daemon.terminal("KIOSK001") as kiosk:
            kiosk.institution_id = "999999999999999"
            reply = await kiosk.exchange(SignOn(**kiosk.envelope()), mac=False)
            assert reply.response_code == Outcome.INVALID_MERCHANT.code
            assert reply.mac is None  # no keys the sender is known to hold: no field 64
        reasons = [
            (fields["rc"], fields["reason"])
            for record in caplog.records
            if isinstance(fields := getattr(record, "fields", None), dict) and "reason" in fields
        ]
        assert reasons == [
            ("22", "not_signed_on"),
            ("A0", "mac_mismatch"),
            ("A0", "mac_missing"),
            ("77", "batch_mismatch"),
            ("97", "terminal_unknown"),
            ("03", "institution_mismatch"),
        ]

    run(tmp_path, scenario, backend)


def test_format_error_is_answered_30_to_the_right_stan(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            message = Message(
                "0820",
                {11: "000042", 41: "POS00001", 42: "101320000000001", 60: "00000001301"},
                bytes.fromhex("6000030000"),
                bytes(6),
            )
            payload = bytearray(CODEC.encode(message))
            payload[-3] = 0xAB  # field 60 is no longer BCD
            answer = CODEC.decode(await pos.send(bytes(payload)))
            assert answer.mti == "0830"
            assert answer.fields[39] == "30"
            assert answer.fields[11] == "000042"
            assert answer.fields[41] == "POS00001"

    run(tmp_path, scenario, backend)


def test_a_settlement_without_field_58_is_answered_30_echoing_its_envelope(
    tmp_path: Path,
) -> None:
    """It decodes, but lacks a field its row requires: 30 with F3, F11, F25, F41, F42 and F60
    echoed and no MAC, on a connection that stays open (a sign-on follows on it)."""
    envelope = {3: "000000", 11: "000043", 25: "00", 41: "POS00001", 42: "101320000000001",
                60: "22000001000"}
    fields = {**envelope, 2: "6225880123456789", 4: "000000001000", 63: bytes(16)}
    payload = CODEC.encode(Message("0200", fields, bytes.fromhex("6000030000"), bytes(6)))

    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            answer = CODEC.decode(await pos.send(payload))
            assert answer.mti == "0210"
            assert answer.fields == {39: "30", **envelope}
            await pos.sign_on()

    run(tmp_path, scenario)


def test_a_secondary_bitmap_is_answered_30_echoing_the_envelope_from_the_right_offsets(
    tmp_path: Path,
) -> None:
    """Bit 1 set on this 64-field interface, with or without the 8 bytes of a secondary
    bitmap: 30, echoing the STAN, terminal and institution as sent, without a MAC."""
    envelope = {11: "123456", 41: "POS00001", 42: "101320000000001", 60: "00000001301"}
    plain = CODEC.encode(Message("0820", envelope, bytes.fromhex("6000030000"), bytes(6)))
    bit_only = bytearray(plain)
    bit_only[13] |= 0x80
    with_secondary = bytearray(bit_only)
    with_secondary[21:21] = bytes(8)

    async def scenario(daemon: Daemon) -> None:
        for frame in (bit_only, with_secondary):
            async with daemon.terminal("POS00001") as pos:
                answer = CODEC.decode(await pos.send(bytes(frame)))
                assert answer.mti == "0830" and answer.fields[39] == "30"
                assert answer.fields[11] == "123456"
                assert answer.fields[41] == "POS00001"
                assert answer.fields[42] == "101320000000001"
                assert 64 not in answer.fields

    run(tmp_path, scenario)


def test_a_format_error_whose_stan_cannot_be_read_closes_the_connection(
    tmp_path: Path,
) -> None:
    """A 0200 cut short inside field 2: the STAN the POS would match a 30 by was never read."""
    tpdu, header = bytes.fromhex("6000030000"), bytes(6)
    whole = CODEC.encode(Message("0200", {2: "6225880123456789", 11: "000042"}, tpdu, header))
    cut = whole[:24]  # MTI and bitmap read; field 2 truncated

    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            pos.writer.write(encode_frame(cut, LengthFormat.BINARY2))
            await pos.writer.drain()
            assert await asyncio.wait_for(pos.reader.read(4096), timeout=10) == b""

    run(tmp_path, scenario)


def test_a_frame_whose_mti_the_interface_does_not_define_closes_the_connection(
    tmp_path: Path,
) -> None:
    """No format-error reply with an MTI the interface does not define (0600 → 0610), and no
    silence on an open connection for an MTI that is not even BCD, or absent: closed."""
    envelope = {11: "000042", 41: "POS00001", 42: "101320000000001", 60: "00000001301"}
    tpdu, header = bytes.fromhex("6000030000"), bytes(6)
    undefined = CODEC.encode(Message("0600", envelope, tpdu, header))  # decodes; no such MTI
    unreadable = bytearray(CODEC.encode(Message("0820", envelope, tpdu, header)))
    unreadable[11:13] = b"\xab\xcd"  # the MTI's two BCD bytes
    response = CODEC.encode(Message("0830", {**envelope, 39: "00"}, tpdu, header))

    async def scenario(daemon: Daemon) -> None:
        for frame in (undefined, bytes(unreadable), tpdu + header, response):
            async with daemon.terminal("POS00001") as pos:
                pos.writer.write(encode_frame(frame, LengthFormat.BINARY2))
                await pos.writer.drain()
                assert await asyncio.wait_for(pos.reader.read(4096), timeout=10) == b""
        async with daemon.terminal("POS00001") as pos:  # the listener serves on
            assert (await sign_on(pos)).response_code == "00"

    run(tmp_path, scenario)


def test_metrics_health_and_readiness(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            await pos.exchange(Echo(**pos.envelope()))
        port = daemon.app.http_port

        def get(path: str) -> tuple[int, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.read().decode()

        status, text = await asyncio.to_thread(get, "/metrics")
        assert status == 200
        assert (
            'medswitch_messages_total{interface="terminal",mti="0830",response_code="00",'
            'type="echo"}' in text
        )
        assert (
            'medswitch_messages_total{interface="terminal",mti="0810",response_code="00",'
            'type="sign_on"}' in text
        )
        assert "medswitch_handler_seconds_bucket" in text
        assert 'medswitch_hsm_seconds_count{operation="verify_mac"}' in text
        assert 'medswitch_hsm_seconds_count{operation="sign_on"}' in text
        assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, "/readyz"))[0] == 200
        # The HIS API is mounted on the same port and refuses a caller without credentials.
        try:
            await asyncio.to_thread(get, "/his/v1/bills/b1")
        except urllib.error.HTTPError as refused:
            assert refused.code == 401
            assert b'"error"' in refused.read()
        else:
            raise AssertionError("the HIS API answered without credentials")

    run(tmp_path, scenario, backend)


def test_not_ready_once_the_ledgers_writer_process_ended_for_good(tmp_path: Path) -> None:
    """The embedded SQLite ledger's writer process (PostgreSQL has none), with no restart left
    (its restarts: tests/switch/test_settlement.py)."""

    async def scenario(daemon: Daemon) -> None:
        writer = daemon.app.ledger.writer  # type: ignore[attr-defined]
        assert isinstance(writer, ProcessWriter), "on SQLite the daemon writes from a process"
        assert writer._process is not None
        writer._restarts = Restarts(delays_s=())
        port = daemon.app.http_port

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as refused:
                return refused.code, refused.read().decode()

        assert (await asyncio.to_thread(get, "/readyz"))[0] == 200
        os.kill(writer._process.pid, signal.SIGKILL)
        for _ in range(200):  # bounded: the loss is seen when its socket closes
            if writer.health() is Health.WRITER_ENDED:
                break
            await asyncio.sleep(0.05)
        status, text = await asyncio.to_thread(get, "/readyz")
        assert status == 503 and "ledger writer ended" in text

    run(tmp_path, scenario, "sqlite")


def test_parameter_and_incremental_blacklist_download(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        for version in range(1, 61):  # 60 loss reports; the fifth is later unlossed
            daemon.sql(
                "INSERT INTO blacklist (application_serial, reason, version, removed_version,"
                " added_at_us) VALUES (?, 'lost', ?, ?, 0)",
                (f"31{version:014d}", version, 61 if version == 5 else None),
            )
        async with daemon.terminal("POS00001") as pos:
            await sign_on(pos)
            parameters = await pos.exchange(ParameterDownload(**pos.envelope()))
            assert isinstance(parameters, ParameterReply) and parameters.parameters is not None
            assert parameters.parameters.offline_floor_fen == 20_000
            assert parameters.parameters.blacklist_version == 61
            held: set[bytes] = set()
            version, rounds = 0, 0
            while rounds < 10:
                rounds += 1
                reply = await pos.exchange(
                    BlacklistDownload(**pos.envelope(), from_version=f"{version:08d}")
                )
                assert isinstance(reply, BlacklistReply) and reply.blacklist is not None
                for action, serial in reply.blacklist.entries:
                    (held.add if action == "A" else held.discard)(serial)
                version = reply.blacklist.version
                if not reply.blacklist.more:
                    break
            assert version == 61 and rounds == 2
            assert len(held) == 59
            assert bytes.fromhex("0000" + f"31{5:014d}") not in held

    run(tmp_path, scenario, backend)

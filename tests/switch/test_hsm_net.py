"""The network HSM's protocol: framing, echoed headers, pipelining, error codes, connection
loss, and `medswitch hsm serve` as a real process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsm import hostcmd
from hsm.errors import InvalidInputError, KeyNotFoundError, KeyUsageError, NotSupportedError
from hsm.interface import MacAlgorithm
from hsm.keys import KeyRef, KeyUsage
from switch.cli import main
from switch.hsm_net import HsmClient, HsmServer
from tests.support.hsm_keys import KNOWN_KEYS, load_known_keys, make_soft_hsm


async def raw_exchange(port: int, bodies: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(hostcmd.frame(b) for b in bodies))
    replies = []
    for _ in bodies:
        length = int.from_bytes(await reader.readexactly(2), "big")
        replies.append(await reader.readexactly(length))
    writer.close()
    return replies


def test_framing_header_echo_and_error_codes(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        soft = make_soft_hsm()
        await load_known_keys(soft)
        server = HsmServer(soft)
        port = await server.start("127.0.0.1", 0)
        try:
            replies = await raw_exchange(
                port, [b"ABCDNC", b"WXYZQQ", b"0007BU", b"0008M8K05nope!"]
            )
        finally:
            await server.stop()
        assert replies[0] == b"ABCDND00" + hostcmd.ENCODERS["S"](await soft.diagnostics())
        assert replies[1].startswith(b"WXYZQR68")  # unknown command: 68, header echoed
        assert replies[2].startswith(b"0007BV15")  # short message: 15 invalid input
        assert replies[3].startswith(b"0008M915")

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    for _, value in KNOWN_KEYS.values():
        assert value not in logged.upper()


def test_pipelined_requests_match_their_responses() -> None:
    async def run() -> None:
        soft = make_soft_hsm()
        refs = await load_known_keys(soft)
        server = HsmServer(soft)
        port = await server.start("127.0.0.1", 0)
        client = await HsmClient.connect("127.0.0.1", port)
        try:
            mak = refs["v8/mak"]
            messages = [b"message %d" % i for i in range(500)]
            macs = await asyncio.gather(
                *(client.generate_mac(mak, MacAlgorithm.CUP_ECB, m) for m in messages)
            )
            expected = [await soft.generate_mac(mak, MacAlgorithm.CUP_ECB, m) for m in messages]
            assert macs == expected
            verdicts = await asyncio.gather(
                *(client.verify_mac(mak, MacAlgorithm.CUP_ECB, m, macs[0]) for m in messages[:5])
            )
            assert verdicts == [True, False, False, False, False]
            with pytest.raises(KeyNotFoundError):
                await client.kcv(KeyRef("missing", 1, KeyUsage.ZPK))
            with pytest.raises(InvalidInputError):
                await client.generate_mac(mak, MacAlgorithm.X9_9, bytes(70_000))
        finally:
            await client.close()
            await server.stop()

    asyncio.run(run())


def test_an_export_the_policy_forbids_is_refused_over_the_network_naming_its_rule() -> None:
    async def run() -> None:
        soft = make_soft_hsm()
        server = HsmServer(soft)
        port = await server.start("127.0.0.1", 0)
        client = await HsmClient.connect("127.0.0.1", port)
        try:
            now = datetime(2026, 12, 7)
            zmk = await client.generate_key("zmk/bank1", KeyUsage.ZMK, now=now)
            load = await client.generate_key("card/MK_LOAD", KeyUsage.MK_LOAD, now=now)
            zpk = await client.generate_key("bank1/zpk", KeyUsage.ZPK, now=now)
            assert (await client.export_key(zpk, zmk)).kcv == zpk.kcv
            with pytest.raises(KeyUsageError, match="only by rule card-masters-to-bureau"):
                await client.export_key(load, zmk)
        finally:
            await client.close()
            await server.stop()

    asyncio.run(run())


def test_connection_loss_fails_requests_in_flight_then_reconnects() -> None:
    async def run() -> None:
        gate = asyncio.Event()

        class Stalling:
            async def diagnostics(self) -> str:
                await gate.wait()
                return "000000"

        server = HsmServer(Stalling())  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        client = await HsmClient.connect("127.0.0.1", port)
        pending = asyncio.ensure_future(client.diagnostics())
        await asyncio.sleep(0.05)
        await server.stop()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(OSError):  # nobody listens any more
            await client.diagnostics()
        # The HSM comes back on the same port: the next request connects again.
        gate.set()
        again = HsmServer(Stalling())  # type: ignore[arg-type]
        await again.start("127.0.0.1", port)
        try:
            assert await client.diagnostics() == "000000"
        finally:
            await client.close()
            await again.stop()

    asyncio.run(run())


def test_a_request_without_answer_times_out() -> None:
    async def run() -> None:
        class Stalling:
            async def diagnostics(self) -> str:
                await asyncio.sleep(10)
                return "000000"

        server = HsmServer(Stalling())  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        client = await HsmClient.connect("127.0.0.1", port, timeout_s=0.1)
        try:
            with pytest.raises(TimeoutError):
                await client.diagnostics()
        finally:
            await client.close()
            await server.stop()

    asyncio.run(run())


def test_unsupported_method_over_a_custom_backend() -> None:
    async def run() -> None:
        class Nothing:
            async def diagnostics(self) -> str:
                raise NotSupportedError("no LMK here")

        server = HsmServer(Nothing())  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        client = await HsmClient.connect("127.0.0.1", port)
        try:
            with pytest.raises(NotSupportedError, match="no LMK here"):
                await client.diagnostics()
        finally:
            await client.close()
            await server.stop()

    asyncio.run(run())


def test_medswitch_hsm_serve_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    files = []
    for who in ("a", "b"):
        path = tmp_path / f"{who}.txt"
        result = runner.invoke(
            main, ["keys", "--home", str(home), "component", "--custodian", who, "--out", str(path)]
        )
        assert result.exit_code == 0, result.output
        files += ["-c", str(path)]
    keys = ["keys", "--home", str(home)]
    assert runner.invoke(main, [*keys, "lmk-form", "--new", *files]).exit_code == 0
    made = runner.invoke(main, [*keys, "generate", "zak/1", "--usage", "ZAK", *files])
    kcv = made.output.split("KCV ")[-1].strip()

    command = [sys.executable, "-c", "from switch.cli import main; main()",
               "hsm", "serve", "--port", "0", "--home", str(home), *files]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line + (process.stderr.read().decode() if process.stderr else "")
        port = int(match.group(1))

        async def use() -> None:
            client = await HsmClient.connect("127.0.0.1", port)
            try:
                assert await client.kcv(KeyRef("zak/1", 1, KeyUsage.ZAK)) == kcv
            finally:
                await client.close()

        asyncio.run(use())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)

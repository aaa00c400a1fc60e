"""The access controller over real pseudo-terminal lines, with hosts that swap TPDUs: the AT
dialogue, both framings with their faults, the TPDU rewrite, routing misses, failover."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.request import urlopen

import pytest
import serial

from messages import hayes
from messages.framing import LengthFormat, encode_frame
from messages.line_framing import LineFraming
from simulators.dial_link import Dial, LineDown, ModemLine
from switch.nac.config import Faults
from tests.support.nac import NUMBER, SwappingHost, running_nac, table_text

TPDU = bytes.fromhex("6000030000")
SWAPPED = bytes.fromhex("6000000003")  # a reply swaps destination and source
BODY = b"\x01\x02" + bytes(range(200))


def run(work: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(work(), timeout=60))


def test_a_call_carries_frames_both_ways_and_the_tpdu_comes_back_as_sent(tmp_path: Path) -> None:
    async def work() -> None:
        host = SwappingHost(b"!")
        port = await host.start()
        async with running_nac(table_text(tmp_path, {"0003": [port]})) as nac:
            modem = ModemLine(Dial(str(tmp_path / "line02"), "9,955-66", timeout_s=5))
            tpdu = bytes.fromhex("6000031234")
            for n in range(3):
                answer = await modem.exchange(tpdu + BODY + bytes([n]))
                # a reply swaps destination and source: the terminal's own source comes back
                assert answer == bytes.fromhex("6012340003") + BODY + bytes([n]) + b"!"
            assert modem.calls == 1 and modem.speed_bps == 9600
            modem.close()
            stats = nac.stats.lines["line02"]
            assert (stats.frames_in, stats.frames_out, stats.calls["connect"]) == (3, 3, 1)
            assert nac.stats.hosts[f"127.0.0.1:{port}"].answers == 3
        await host.stop()

    run(work)


@pytest.mark.parametrize(
    ("number", "calls_max", "expected"),
    [("12345", 8, "NO ANSWER"), (NUMBER, 1, "BUSY")],
)
def test_a_dial_that_does_not_connect_is_not_sent(
    tmp_path: Path, number: str, calls_max: int, expected: str
) -> None:
    async def work() -> None:
        text = table_text(tmp_path, {"0003": [1]}, extra=f"calls_max = {calls_max}")
        async with running_nac(text) as nac:
            busy = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, timeout_s=5))
            if calls_max == 1:  # the one call the controller takes is up
                await busy._call()
            modem = ModemLine(Dial(str(tmp_path / "line02"), number, timeout_s=5))
            with pytest.raises(LineDown, match=expected) as caught:
                await modem.exchange(TPDU + BODY)
            assert not caught.value.sent
            busy.close()
            assert (
                sum(
                    line.calls[expected.lower().replace(" ", "_")]
                    for line in nac.stats.lines.values()
                )
                == 1
            )

    run(work)


async def dialogue(port: serial.Serial, command: bytes, timeout_s: float = 5) -> bytes:
    """Write ``command``; read until a result code line (a test helper on a raw port)."""
    port.write(command)
    seen = b""
    for _ in range(500):
        seen += port.read(256)
        lines = [hayes.parse_result(line) for line in seen.split(b"\r\n")]
        if any(lines):
            return seen
        await asyncio.sleep(0.01)
    raise AssertionError(f"no result code after {command!r}: {seen!r}")


def test_the_dialogue_echo_escape_ath_and_ato(tmp_path: Path) -> None:
    async def work() -> None:
        host = SwappingHost()
        hport = await host.start()
        async with running_nac(table_text(tmp_path, {"0003": [hport]})) as nac:
            port = serial.Serial(str(tmp_path / "line01"), timeout=0)
            assert await dialogue(port, b"ATZ\r") == b"ATZ\r\r\nOK\r\n"  # echo on
            assert await dialogue(port, b"AT&FE0\r") == b"AT&FE0\r\r\nOK\r\n"
            assert await dialogue(port, b"ATE0 S7=30 X4\r") == b"\r\nOK\r\n"
            assert await dialogue(port, b"ATG5\r") == b"\r\nERROR\r\n"
            assert await dialogue(port, b"ATO\r") == b"\r\nNO CARRIER\r\n"  # no call to resume
            assert await dialogue(port, f"ATDP{NUMBER}\r".encode()) == b"\r\nCONNECT 9600\r\n"
            await asyncio.sleep(0.3)  # the guard time, then +++, then the guard time again
            assert await dialogue(port, b"+++") == b"\r\nOK\r\n"
            assert nac.stats.lines["line01"].state == "connected"
            assert await dialogue(port, b"ATO\r") == b"\r\nCONNECT 9600\r\n"
            await asyncio.sleep(0.3)
            assert await dialogue(port, b"+++") == b"\r\nOK\r\n"
            assert await dialogue(port, b"ATH\r") == b"\r\nOK\r\n"
            assert nac.stats.lines["line01"].state == "command"
            port.close()  # DTR dropped
            for _ in range(200):
                if nac.stats.lines["line01"].state == "idle":
                    break
                await asyncio.sleep(0.01)
            assert nac.stats.lines["line01"].state == "idle"
            assert nac.stats.lines["line01"].calls["connect"] == 1
        await host.stop()

    run(work)


def test_stx_framing_acks_and_the_bad_lrc_is_sent_again(tmp_path: Path) -> None:
    async def work() -> None:
        host = SwappingHost()
        hport = await host.start()
        text = table_text(tmp_path, {"0003": [hport]}, framing="stx")
        async with running_nac(text) as nac:
            nac.runners["line01"].inject(Faults(noise_bytes=5))  # before each answer: dropped
            modem = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, LineFraming.STX, 5))
            assert await modem.exchange(TPDU + BODY) == SWAPPED + BODY
            # a damaged frame from the terminal: NAKed, sent again, answered once
            write = modem._write
            damaged = [True]

            def damaging(data: bytes) -> None:
                if damaged and len(data) > 1:
                    damaged.clear()
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                write(data)

            modem._write = damaging  # type: ignore[method-assign]
            assert await modem.exchange(TPDU + BODY) == SWAPPED + BODY
            stats = nac.stats.lines["line01"]
            assert stats.bad_frames == 1 and stats.frames_in == 2 and host.answered == 2
            assert stats.noise_bytes == 0  # the terminal sent none
            modem.close()
        await host.stop()

    run(work)


def test_a_line_dropped_mid_frame_and_the_next_call(tmp_path: Path) -> None:
    async def work() -> None:
        host = SwappingHost()
        hport = await host.start()
        async with running_nac(table_text(tmp_path, {"0003": [hport]})) as nac:
            nac.runners["line01"].inject(Faults(drop_answer=(2,)))
            modem = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, timeout_s=5))
            await modem.exchange(TPDU + BODY)
            with pytest.raises(LineDown, match="dropped") as caught:
                await modem.exchange(TPDU + BODY)
            assert caught.value.sent and not modem.connected
            assert await modem.exchange(TPDU + BODY) == SWAPPED + BODY  # dialled again
            assert modem.calls == 2
            assert nac.stats.lines["line01"].failures["fault"] == 1
            modem.close()
        await host.stop()

    run(work)


def test_routing_misses_and_host_timeouts_drop_the_line(tmp_path: Path) -> None:
    async def work() -> None:
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        text = table_text(tmp_path, {"0003": [port]}, answer_timeout_s=0.5)
        async with running_nac(text) as nac:
            modem = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, timeout_s=5))
            with pytest.raises(LineDown, match="dropped"):
                await modem.exchange(bytes.fromhex("6000090000") + BODY)
            assert nac.stats.routing_misses["0009"] == 1
            with pytest.raises(LineDown, match="dropped"):
                await modem.exchange(TPDU + BODY)  # the host never answers
            failures = nac.stats.lines["line01"].failures
            assert failures["routing_miss"] == 1 and failures["host_timeout"] == 1
            modem.close()
        silent.close()
        await silent.wait_closed()

    run(work)


def test_a_host_killed_the_next_calls_go_to_the_other(tmp_path: Path) -> None:
    async def work() -> None:
        first, second = SwappingHost(b"1"), SwappingHost(b"2")
        ports = [await first.start(), await second.start()]
        async with running_nac(table_text(tmp_path, {"0003": ports})) as nac:
            modem = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, timeout_s=5))
            assert (await modem.exchange(TPDU + BODY)).endswith(b"1")
            modem.close()
            await first.stop()
            await wait_until(lambda: not nac.stats.hosts[f"127.0.0.1:{ports[0]}"].up)
            for _ in range(3):
                assert (await modem.exchange(TPDU + BODY)).endswith(b"2")
                modem.close()
            assert (first.answered, second.answered) == (1, 3)
            assert nac.stats.hosts[f"127.0.0.1:{ports[0]}"].failures["connect"] >= 1
        await second.stop()

    run(work)


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def test_after_a_hang_up_the_line_is_a_fresh_modem(tmp_path: Path) -> None:
    async def work() -> None:
        async with running_nac(table_text(tmp_path, {"0003": [1]})) as nac:
            stats = nac.stats.lines["line01"]
            port = serial.Serial(str(tmp_path / "line01"), timeout=0)
            assert await dialogue(port, b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
            assert await dialogue(port, b"AT\r") == b"\r\nOK\r\n"
            port.close()  # DTR dropped: the controller links a fresh line
            await wait_until(lambda: stats.state == "idle")
            port = serial.Serial(str(tmp_path / "line01"), timeout=0)
            assert await dialogue(port, b"AT\r") == b"AT\r\r\nOK\r\n"  # echo on again
            port.close()

    run(work)


def test_a_serial_device_line_and_the_metrics(tmp_path: Path) -> None:
    """A line on a serial device through pyserial (here the terminal side of a pty pair the
    test holds the other side of), and /metrics with the call on it."""

    async def work() -> None:
        host = SwappingHost()
        hport = await host.start()
        master, slave = os.openpty()
        device = os.ttyname(slave)
        os.close(slave)
        text = table_text(tmp_path, {"0003": [hport]}, lines=1).replace(
            f'pty = "{tmp_path / "line01"}"', f'device = "{device}"'
        )
        try:
            async with running_nac(text) as nac:
                os.set_blocking(master, False)

                async def typed(data: bytes, expect: bytes) -> bytes:
                    os.write(master, data)
                    seen = b""
                    for _ in range(500):
                        with contextlib.suppress(BlockingIOError):
                            seen += os.read(master, 4096)
                        if seen.endswith(expect):
                            return seen
                        await asyncio.sleep(0.01)
                    raise AssertionError(f"{expect!r} not in {seen!r}")

                await typed(b"ATE0\r", b"OK\r\n")
                await typed(f"ATDT{NUMBER}\r".encode(), b"CONNECT 9600\r\n")
                answer = await typed(encode_frame(TPDU + BODY, LengthFormat.BINARY2), BODY)
                assert answer == encode_frame(SWAPPED + BODY, LengthFormat.BINARY2)
                url = f"http://127.0.0.1:{nac.status_port}/metrics"
                metrics = await asyncio.to_thread(lambda: urlopen(url, timeout=10).read())
                assert b'medswitch_nac_calls_total{line="line01",result="connect"} 1.0' in metrics
                assert b'medswitch_nac_frames_total{direction="in",line="line01"} 1.0' in metrics
                assert f'medswitch_nac_host_up{{host="127.0.0.1:{hport}"}} 1.0'.encode() in metrics
        finally:
            os.close(master)
            await host.stop()

    run(work)


def test_a_slow_answer_and_an_idle_line_dropped(tmp_path: Path) -> None:
    async def work() -> None:
        text = table_text(tmp_path, {"0003": [1]}, extra="idle_timeout_s = 1.0")
        async with running_nac(text) as nac:
            nac.runners["line01"].inject(Faults(slow_answer_s=0.3))
            modem = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, timeout_s=5))
            await modem._call()  # connected: CONNECT comes after the slow answer
            assert modem.connected and nac.stats.lines["line01"].calls["connect"] == 1
            with pytest.raises(LineDown, match="dropped"):
                await modem._read(5.0)  # nothing sent: the line is dropped when idle
            modem.close()
            assert nac.stats.lines["line01"].failures["idle"] == 1

    run(work)


def test_the_terminal_hangs_up_with_escape_and_ath_and_dials_again(tmp_path: Path) -> None:
    async def work() -> None:
        host = SwappingHost()
        hport = await host.start()
        async with running_nac(table_text(tmp_path, {"0003": [hport]})) as nac:
            modem = ModemLine(Dial(str(tmp_path / "line01"), NUMBER, timeout_s=5))
            assert await modem.exchange(TPDU + BODY) == SWAPPED + BODY
            await modem.hang_up(guard_s=0.3)  # the table's escape guard is 0.2 s
            assert not modem.connected and nac.stats.lines["line01"].state == "command"
            assert await modem.exchange(TPDU + BODY) == SWAPPED + BODY  # ATDT again
            assert modem.calls == 2 and nac.stats.lines["line01"].calls["connect"] == 2
            assert not nac.stats.lines["line01"].failures
            modem.close()
        await host.stop()

    run(work)

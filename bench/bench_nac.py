"""The network access controller: request/answer exchanges per second over N simultaneous modem
lines (pseudo-terminals, the line speed emulated) through `medswitch nac`'s controller to a host
that answers each frame at once, beside a raw TCP baseline in the same run (N connections
straight to the same host). The line-rate bound is what N lines at that speed can carry at
most (8N1: ten bits a byte, both directions of each exchange); the controller's share is how
close it comes. Terminals, controller and host share this machine's core.

    python -m bench.bench_nac [--lines 1,8,32] [--seconds 5] [--speed 9600] [--bytes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from messages.framing import FrameDecoder, LengthFormat, encode_frame
from simulators.dial_link import Dial, ModemLine
from switch.nac.config import parse_table
from switch.nac.server import Nac

NUMBER = "95566"
TPDU = bytes.fromhex("6000030000")


class Run(NamedTuple):
    lines: int
    nac_per_s: float
    bound_per_s: float
    tcp_per_s: float


class Host:
    """The host: each frame answered with its TPDU swapped, as a switch replies."""

    def __init__(self) -> None:
        self.connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        decoder = FrameDecoder(LengthFormat.BINARY2)
        with contextlib.suppress(OSError):
            while data := await reader.read(65_536):
                for frame in decoder.feed(data):
                    reply = frame[:1] + frame[3:5] + frame[1:3] + frame[5:]
                    writer.write(encode_frame(reply, LengthFormat.BINARY2))
        writer.close()

    async def close(self) -> None:
        for writer in self.connections.values():
            writer.close()  # each connection's reader ends, and its task with it
        await asyncio.gather(*self.connections, return_exceptions=True)


def table(lines_dir: Path, lines: int, speed: int, host_port: int) -> str:
    text = ["[nac]", f'numbers = ["{NUMBER}"]', "status_port = 0"]
    for n in range(1, lines + 1):
        text += ["[[lines]]", f'pty = "{lines_dir / f"line{n:03d}"}"', f"speed_bps = {speed}"]
    text += ["[[routes]]", 'nii = "0003"', f'hosts = ["127.0.0.1:{host_port}"]']
    return "\n".join(text) + "\n"


async def through_nac(lines: int, seconds: float, speed: int, payload: bytes, port: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        nac = Nac(parse_table(table(Path(directory), lines, speed, port)))
        await nac.start()
        modems = [
            ModemLine(Dial(f"{directory}/line{n:03d}", NUMBER, timeout_s=30.0))
            for n in range(1, lines + 1)
        ]
        try:
            await asyncio.gather(*(m.exchange(payload) for m in modems))  # every line dialled
            return await count(seconds, [m.exchange for m in modems], payload)
        finally:
            for modem in modems:
                modem.close()
            await nac.stop()


async def over_tcp(lines: int, seconds: float, payload: bytes, port: int) -> float:
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(lines)]

    def exchanger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):  # type: ignore[no-untyped-def]
        decoder = FrameDecoder(LengthFormat.BINARY2)

        async def exchange(data: bytes) -> bytes:
            writer.write(encode_frame(data, LengthFormat.BINARY2))
            for _ in range(10_000):
                frames = decoder.feed(await reader.read(65_536))
                if frames:
                    return frames[0]
            raise RuntimeError("no answer")

        return exchange

    try:
        return await count(seconds, [exchanger(r, w) for r, w in connections], payload)
    finally:
        for _, writer in connections:
            writer.close()


async def count(seconds: float, exchanges: list, payload: bytes) -> float:  # type: ignore[type-arg]
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(exchange) -> None:  # type: ignore[no-untyped-def]
        nonlocal done
        for _ in range(10_000_000):
            if time.perf_counter() >= deadline:
                return
            answer = await exchange(payload)
            assert answer[5:] == payload[5:]
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(e) for e in exchanges))
    return done / (time.perf_counter() - start)


async def measure(counts: list[int], seconds: float, speed: int, size: int) -> list[Run]:
    answering = Host()
    host = await asyncio.start_server(answering.answer, "127.0.0.1", 0)
    port = host.sockets[0].getsockname()[1]
    payload = TPDU + bytes(n % 251 for n in range(size - len(TPDU)))
    exchange_bits = 2 * (size + 2) * 10  # request and answer, 2-byte length, 8N1
    runs = []
    try:
        for lines in counts:
            nac = await through_nac(lines, seconds, speed, payload, port)
            tcp = await over_tcp(lines, seconds, payload, port)
            runs.append(Run(lines, nac, lines * speed / exchange_bits, tcp))
    finally:
        host.close()
        await answering.close()
        await host.wait_closed()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lines", default="1,8,32", help="line counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--speed", type=int, default=9600, choices=(1200, 2400, 9600))
    parser.add_argument("--bytes", type=int, default=200, help="frame size (TPDU included)")
    args = parser.parse_args()
    counts = [int(n) for n in args.lines.split(",")]
    runs = asyncio.run(measure(counts, args.seconds, args.speed, args.bytes))
    print(f"{args.bytes}-byte frames, lines at {args.speed} bps, {args.seconds:.0f} s per run")
    print(f"{'lines':>6} {'NAC exch/s':>11} {'line bound':>11} {'of bound':>9} {'raw TCP':>10}")
    for run in runs:
        share = run.nac_per_s / run.bound_per_s
        print(
            f"{run.lines:>6} {run.nac_per_s:>11.1f} {run.bound_per_s:>11.1f} {share:>8.0%} "
            f"{run.tcp_per_s:>10.0f}"
        )


if __name__ == "__main__":
    main()

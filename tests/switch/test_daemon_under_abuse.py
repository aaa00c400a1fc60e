"""`medswitch serve` as a real process under abuse (issue 22, findings 2, 4 and 6): a connection
that floods frames and never reads, descriptors taken by partial HTTP requests, and SIGTERM in
the middle of a burst. Every process the test starts is stopped by it; every loop is bounded."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from messages.codec import Codec
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import Echo, SignOn, TerminalMessage
from messages.terminal_table import build, parse
from switch.demo.keys import provision, write_config
from tests.support.daemon import INSTITUTION, make_database

SCRIPT = str(Path(sys.executable).parent / "medswitch")
CODEC = Codec(TERMINAL)
B2 = LengthFormat.BINARY2


@dataclass
class Served:
    process: subprocess.Popen[str]
    terminal_port: int
    http_port: int
    log: Path  # the daemon's standard error

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match
        return int(match.group(1))


@contextmanager
def serving(home: Path, nofile: int | None = None) -> Iterator[Served]:
    make_database(home / "medswitch.db", {"POS00001": "pos"})
    asyncio.run(provision(home, ["POS00001"]))
    write_config(home, terminal_port=0, http_port=0)
    env = {**os.environ, "MEDSWITCH_HOME": str(home)}
    limit: Callable[[], None] | None = None
    if nofile is not None:

        def limit() -> None:  # soft = hard: the daemon cannot raise it
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log = (home / "daemon.log").open("w")  # a file: a full pipe would block the daemon
    process = subprocess.Popen(
        [SCRIPT, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        preexec_fn=limit,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"terminals on 127\.0\.0\.1:(\d+).*HTTP on 127\.0\.0\.1:(\d+)", line)
        assert match, line + (home / "daemon.log").read_text()
        yield Served(process, int(match.group(1)), int(match.group(2)), home / "daemon.log")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        log.close()


def _frame(message: TerminalMessage) -> bytes:
    return encode_frame(CODEC.encode(build(message)), B2)


def _echo(stan: int) -> bytes:
    return _frame(Echo(stan=f"{stan:06d}", terminal_id="POS00001", institution_id=INSTITUTION))


async def _sign_on_and_echo(port: int) -> float:
    """Seconds a legitimate terminal waits for its sign-on and echo replies."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sign_on = SignOn(stan="900001", terminal_id="POS00001", institution_id=INSTITUTION)
        decoder = FrameDecoder(B2)
        for request in (_frame(sign_on), _echo(900002)):
            writer.write(request)
            frames: list[bytes] = []
            while not frames:
                data = await asyncio.wait_for(reader.read(4096), timeout=20)
                assert data, "closed without a reply"
                frames = decoder.feed(data)
            assert parse(CODEC.decode(frames[0])).stan in ("900001", "900002")
        return time.monotonic() - started
    finally:
        writer.close()


def test_a_connection_flooding_without_reading_neither_grows_the_daemon_nor_delays_others(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as served:
        asyncio.run(_sign_on_and_echo(served.terminal_port))  # warm: keys, caches
        before_kib = served.rss_kib()
        frames = b"".join(_echo(n) for n in range(1, 200_001))  # 11 MB
        flood = socket.socket()
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: its window
        flood.connect(("127.0.0.1", served.terminal_port))
        flood.setblocking(False)
        sent, deadline = 0, time.monotonic() + 8
        while sent < len(frames) and time.monotonic() < deadline:  # never reads a reply
            try:
                sent += flood.send(frames[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        waited_s = asyncio.run(_sign_on_and_echo(served.terminal_port))
        grown_kib = served.rss_kib() - before_kib
        flood.close()
        print(f"flood: {sent} bytes sent, sign-on + echo {waited_s:.3f} s, RSS +{grown_kib} KiB")
        assert grown_kib < 20_000, grown_kib
        assert waited_s < 5.0, waited_s  # measured 0.2-0.4 s; before: no reply in 20 s


def test_partial_http_requests_cannot_take_the_terminals_descriptors(tmp_path: Path) -> None:
    with serving(tmp_path, nofile=600) as served:
        held = asyncio.run(_partial_http_then_sign_on(served))
        print(f"descriptors held by the daemon with 1,100 partial HTTP requests: {held}")
        assert held < 150  # the HTTP port's share (39 connections) and the daemon's own


async def _partial_http_then_sign_on(served: Served) -> int:
    opened: list[asyncio.StreamWriter] = []

    async def partial() -> None:
        with suppress(OSError, TimeoutError):
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", served.http_port), 5
            )
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            opened.append(writer)

    for _ in range(11):  # 1,100 partial requests
        await asyncio.gather(*(partial() for _ in range(100)))
    await asyncio.sleep(0.2)
    held = len(list(Path(f"/proc/{served.process.pid}/fd").iterdir()))
    try:
        waited_s = await _sign_on_and_echo(served.terminal_port)
        assert waited_s < 5, waited_s
    finally:
        for writer in opened:
            writer.close()
    return held


def test_sigterm_mid_burst_answers_every_request_the_daemon_took(tmp_path: Path) -> None:
    with serving(tmp_path) as served:
        replied = asyncio.run(_burst_with_sigterm(served))
        assert served.process.wait(timeout=30) == 0
        handled = set()
        for line in served.log.read_text().splitlines():
            with suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == "message" and entry.get("terminal") == "POS00001":
                    handled.add(entry["stan"])
        print(f"drain: {len(handled)} handled, {len(replied)} replied")
        assert len(handled) > 100  # the burst was under way
        assert replied == handled


async def _burst_with_sigterm(served: Served) -> set[str]:
    connections = [
        await asyncio.open_connection("127.0.0.1", served.terminal_port) for _ in range(4)
    ]
    replied: set[str] = set()

    async def send(n: int, writer: asyncio.StreamWriter) -> None:
        stan = 100_000 * (n + 1)
        with suppress(ConnectionError):
            for _ in range(400):  # 20 frames every 5 ms, until the daemon stops reading
                writer.write(b"".join(_echo(stan + i) for i in range(20)))
                stan += 20
                await asyncio.sleep(0.005)

    async def receive(reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(B2)
        with suppress(ConnectionError):
            while data := await asyncio.wait_for(reader.read(65536), 25):
                replied.update(parse(CODEC.decode(f)).stan for f in decoder.feed(data))

    senders = [asyncio.ensure_future(send(n, w)) for n, (_, w) in enumerate(connections)]
    receivers = [asyncio.ensure_future(receive(r)) for r, _ in connections]
    await asyncio.sleep(0.5)
    served.process.send_signal(signal.SIGTERM)
    await asyncio.gather(*receivers)
    for sender in senders:
        sender.cancel()
    for _, writer in connections:
        writer.close()
    return replied

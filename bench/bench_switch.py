"""Terminal exchanges per second through `medswitch serve` (a separate process) — sign-on once,
then MACed echo requests from N terminals with K outstanding each — next to a raw asyncio
loopback echo server driven by the same client in the same run.

    python -m bench.bench_switch [--terminals 20] [--depth 4] [--seconds 5]

An echo exercises the whole pipeline except the ledger: decode, parse, terminal and session
checks, MAC verify, route, build, MAC, encode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import uvloop

from hsm.interface import MacAlgorithm, SignOnKeys
from hsm.keys import KeyRef, KeyUsage
from ledger.demo import init_demo
from messages.codec import Codec, Message
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.spec_terminal import TERMINAL
from messages.terminal import Echo, SignOn, SignOnReply
from messages.terminal_table import build, parse
from switch.demo import keys as demo_keys
from switch.demo.keys import demo_personal_keys
from switch.key_home import component_files_of, open_soft_hsm
from switch.sessions import tmk_alias

CODEC = Codec(TERMINAL)


class Client:
    """One connection; requests matched to replies by STAN."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stan_of: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.reader, self.writer = reader, writer
        self._stan_of = stan_of or self._stan
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.decoder = FrameDecoder(LengthFormat.BINARY2)
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for frame in self.decoder.feed(data):
                future = self.waiting.pop(self._stan_of(frame), None)
                if future is not None and not future.done():
                    future.set_result(frame)

    @staticmethod
    def _stan(frame: bytes) -> bytes:
        """F11 of a reply: the first field after the bitmap when F2-F10 are absent (echo
        replies and their raw echo), read in place so the generator stays cheap."""
        return frame[21:24].hex().encode()

    async def request(self, payload: bytes, stan: bytes) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[stan] = future
        self.writer.write(encode_frame(payload, LengthFormat.BINARY2))
        return await asyncio.wait_for(future, timeout=30)


async def drive(
    port: int, payloads: list[list[tuple[bytes, bytes]]], depth: int, seconds: float
) -> tuple[float, list[float]]:
    """Send each connection's payloads round-robin, `depth` outstanding; exchanges/s, latencies."""
    clients = [Client(*await asyncio.open_connection("127.0.0.1", port)) for _ in payloads]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    count = 0

    async def lane(client: Client, mine: list[tuple[bytes, bytes]], offset: int) -> None:
        nonlocal count
        index = offset
        while time.perf_counter() < deadline:
            payload, stan = mine[index % len(mine)]
            index += depth
            start = time.perf_counter()
            await client.request(payload, stan)
            latencies.append(time.perf_counter() - start)
            count += 1

    start = time.perf_counter()
    await asyncio.gather(
        *(lane(c, p, k) for c, p in zip(clients, payloads, strict=True) for k in range(depth))
    )
    elapsed = time.perf_counter() - start
    for client in clients:
        client.writer.close()
        client.task.cancel()
    return count / elapsed, latencies


class EchoServer(asyncio.Protocol):
    """The baseline: frames echoed back unchanged."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.decoder = FrameDecoder(LengthFormat.BINARY2)

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.transport.write(encode_frame(frame, LengthFormat.BINARY2))  # type: ignore[attr-defined]


def _echo_server_process(port_pipe: int) -> None:  # pragma: no cover - runs in a child
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(EchoServer, "127.0.0.1", 0)
        os.write(port_pipe, f"{server.sockets[0].getsockname()[1]}\n".encode())
        await asyncio.Event().wait()

    uvloop.run(main())


async def sign_on_all(
    port: int, home: Path, terminals: list[tuple[str, str]], count: int
) -> list[list[tuple[bytes, bytes]]]:
    """Sign each terminal on and pre-build `count` MACed echo payloads for it."""
    hsm = open_soft_hsm(home, component_files_of(demo_keys.custodian_files(home)))
    now = demo_keys._now()
    lanes = []
    for terminal_id, institution in terminals:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        institution = institution.ljust(15)
        request = SignOn(stan="000001", terminal_id=terminal_id, institution_id=institution)
        writer.write(encode_frame(CODEC.encode(build(request)), LengthFormat.BINARY2))
        decoder = FrameDecoder(LengthFormat.BINARY2)
        frames: list[bytes] = []
        while not frames:
            frames = decoder.feed(await asyncio.wait_for(reader.read(4096), timeout=10))
        writer.close()
        reply = parse(CODEC.decode(frames[0]))
        assert isinstance(reply, SignOnReply) and reply.keys is not None, reply
        tmk = KeyRef(tmk_alias(terminal_id), 1, KeyUsage.TMK)
        keys: SignOnKeys = await hsm.accept_sign_on(
            tmk, reply.keys.build(), f"bench/{terminal_id}", now=now
        )
        lane = []
        for stan in range(2, count + 2):
            echo = Echo(
                stan=f"{stan:06d}",
                terminal_id=terminal_id,
                institution_id=institution,
                batch=reply.batch,
            )
            message = build(echo)
            unsigned = CODEC.encode(
                Message(message.mti, {**message.fields, 64: bytes(8)}, message.tpdu, message.header)
            )
            mac = await hsm.generate_mac(keys.mak, MacAlgorithm.CUP_ECB, CODEC.mac_block(unsigned))
            lane.append((CODEC.with_mac(unsigned, mac), f"{stan:06d}".encode()))
        lanes.append(lane)
    return lanes


def report(name: str, rate: float, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0.0
    print(f"{name:34s} {rate:10,.0f} exchanges/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")


def _cpu_ticks(stat: Path) -> tuple[int, int]:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc): the daemon's writer process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # one that just ended
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (Linux /proc): not ended, not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop(process: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    """A daemon process stopped: SIGTERM, then SIGKILL when it has not ended in ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class CpuMeter:
    """CPU time a process spends between :meth:`start` and :meth:`stop` (Linux /proc): user
    and system seconds, and seconds per thread (the main thread's id is the process id). On a
    shared machine this, divided by the exchanges, is steadier than any rate."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.user_s = self.system_s = 0.0
        self.threads_s: dict[int, float] = {}

    def _threads(self) -> dict[int, int]:
        found = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                found[int(task.name)] = sum(_cpu_ticks(task / "stat"))
        return found

    def start(self) -> None:
        self._before = _cpu_ticks(Path(f"/proc/{self.pid}/stat")), self._threads()

    def stop(self) -> None:
        (user, system), threads = self._before
        tick = os.sysconf("SC_CLK_TCK")
        now_user, now_system = _cpu_ticks(Path(f"/proc/{self.pid}/stat"))
        self.user_s, self.system_s = (now_user - user) / tick, (now_system - system) / tick
        self.threads_s = {
            tid: (ticks - threads.get(tid, 0)) / tick for tid, ticks in self._threads().items()
        }

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s

    def per(self, count: int) -> str:
        """µs per unit of work: the total, the system share, the main thread and the others."""
        main = self.threads_s.get(self.pid, 0.0)
        others = sorted((s for t, s in self.threads_s.items() if t != self.pid and s), reverse=True)
        return (
            f"{self.total_s / count * 1e6:5.0f} us ({self.system_s / max(self.total_s, 1e-9):.0%}"
            f" system): event loop {main / count * 1e6:.0f} us, other threads "
            f"{[round(s / count * 1e6) for s in others]}"
        )


def cores() -> tuple[set[int], set[int]] | None:
    """(the servers' CPUs, the generator's CPU) when this process may use two or more: the
    generator gets the last. On loopback every reply the daemon sends wakes the generator, and
    a generator free to run on the daemon's core may be run in its place in the middle of
    that send, with the event loop's GIL held (on a busy machine a reply's write took 126-171
    us, pinned 17 us): DESIGN §6's prototype was measured with its generator on the other
    core too."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return set(allowed[:-1]), {allowed[-1]}


class Ports(NamedTuple):
    """Where `processes` listen: the daemon's terminal and HTTP ports, the echo server's."""

    terminal: int
    echo: int
    http: int


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus`` (threads it starts later inherit)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def processes(
    home: Path,
    pids: dict[str, int] | None = None,
    cpus: set[int] | None = None,
    beside: set[int] | None = None,
) -> Iterator[Ports]:
    """`medswitch serve` on ``home`` and a raw echo server, both on port 0 (and on ``cpus``
    when given; the daemon's own processes, its ledger writer, on ``beside``), stopped after
    use; yields their `Ports`; ``pids``, when given, gets the "daemon" and "echo" ids. The
    daemon is pinned once it has started: it sees every CPU while it decides whether its
    writer gets a process."""
    script = str(Path(sys.executable).parent / "medswitch")
    # the HIS API's per-institution rate is not what this measures (bills are prepared fast)
    env = {**os.environ, "MEDSWITCH_HOME": str(home), "MEDSWITCH_HIS_RATE_PER_S": "0"}
    pinned = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    every = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus | (beside or set())))
    server = subprocess.Popen(
        [script, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=every,  # not this process's CPU (the generator's) alone
    )
    read, write = os.pipe()
    code = f"from bench.bench_switch import _echo_server_process as f; f({write})"
    echo = subprocess.Popen([sys.executable, "-c", code], pass_fds=(write,), preexec_fn=pinned)
    if pids is not None:
        pids.update(daemon=server.pid, echo=echo.pid)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"terminals on 127\.0\.0\.1:(\d+).*HTTP on [^:]+:(\d+)", line)
        assert match, "the daemon did not start"
        if cpus is not None:
            pin(server.pid, cpus)
            for child in children(server.pid):
                pin(child, beside or cpus)
        echo_port = int(os.read(read, 64).decode().strip())
        yield Ports(int(match.group(1)), echo_port, int(match.group(2)))
    finally:
        for process in (server, echo):
            stop(process)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        init_demo(home / "medswitch.db", 10, personal=asyncio.run(demo_personal_keys(home)))
        with sqlite3.connect(home / "medswitch.db") as connection:
            rows = connection.execute(
                "SELECT id, institution_id FROM terminals ORDER BY id LIMIT ?", (args.terminals,)
            ).fetchall()
        asyncio.run(demo_keys.provision(home, [r[0] for r in rows]))
        demo_keys.write_config(home, terminal_port=0, http_port=0)
        with processes(home) as (port, echo_port, _):
            lanes = uvloop.run(sign_on_all(port, home, [(r[0], r[1]) for r in rows], 2000))
            raw_rate, raw_lat = uvloop.run(drive(echo_port, lanes, args.depth, args.seconds))
            rate, lat = uvloop.run(drive(port, lanes, args.depth, args.seconds))
        print(f"{len(lanes)} terminals x {args.depth} outstanding, {args.seconds:.0f} s each:")
        report("raw asyncio loopback echo", raw_rate, raw_lat)
        report("medswitch serve, MACed echo", rate, lat)


if __name__ == "__main__":
    main()

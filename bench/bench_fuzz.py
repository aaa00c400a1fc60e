"""A live fuzz run against `medswitch serve` (issue 22, "Must show"): random and mutated terminal
frames over many connections while one legitimate terminal signs on and sends MACed echoes and
balance inquiries throughout, its latency measured next to the same traffic with no fuzz.

    python -m bench.bench_fuzz [--frames 1000000] [--connections 16] [--burst 64]

The daemon runs on a demo deployment (embedded SQLite, its writer process) on free ports. The
frames come from a pool built before the run: every request of the terminal table (for terminals
the demo knows but the legitimate one is not among) with bytes flipped, truncated, extended,
the secondary-bitmap bit set, a garbage MTI or bitmap, spliced with another, or plain random
bytes — each framed with its true length; and stream breakers a connection ends with: a length
header too short or too long, an oversized one, a bare partial header. A connection sends a
burst of pool frames (a breaker last, now and then), half-closes, and reads every reply until
the daemon closes. Bounded: ``--frames`` in all, ``--seconds`` at most, ``--connections`` at
once, each connection ``--connection-timeout-s`` (then counted as stalled and aborted).

Reported: frames sent, replies by response code, connections the daemon ended before answering
every frame it was sent, stalls and resets, whether the daemon is alive and answering at the
end (a crash is a failure), the daemon's RSS (its writer's included) at the start, every
``--rss-every`` frames and at the end, and the legitimate terminal's p50/p99/max latency during
the fuzz next to a baseline of the same traffic before it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from bench.bench_switch import children, stop
from bench.pos_side import CODEC, Pos, peek, sign_on, signed
from hsm.soft import SoftHsm
from ledger.demo import init_demo
from messages.framing import FrameDecoder, LengthFormat, encode_frame
from messages.private import CardData, OriginalData
from messages.spec_terminal import TERMINAL
from messages.terminal import (
    BalanceInquiry,
    BlacklistDownload,
    DebitAdvice,
    Echo,
    EdLoad,
    HistoryInquiry,
    ParameterDownload,
    Reversal,
    Settlement,
    SignOff,
    SignOn,
    TerminalMessage,
    Void,
)
from messages.terminal_table import build, parse
from switch.demo import keys as demo_keys
from switch.demo.keys import demo_personal_keys
from switch.key_home import component_files_of, open_soft_hsm

MTI_AT = TERMINAL.prefix_bytes  # the MTI's two BCD bytes follow the TPDU and header
BITMAP_AT = MTI_AT + 2
FUZZ_TERMINALS = 3  # demo terminals the fuzz frames name (the legitimate one is not among them)


@dataclass(frozen=True, slots=True)
class Pool:
    """Framed frames (length header included): ``frames`` keep the stream in step, each of
    ``breakers`` puts it out of step, so a connection sends one last if at all."""

    frames: tuple[bytes, ...]
    breakers: tuple[bytes, ...]


def seed_requests(terminals: Sequence[tuple[str, str]], pan: str) -> list[TerminalMessage]:
    """One of each request of the terminal table per terminal, valid as frames."""
    found: list[TerminalMessage] = []
    for number, (terminal_id, institution) in enumerate(terminals):
        envelope = {
            "stan": f"{number + 1:06d}",
            "terminal_id": terminal_id,
            "institution_id": institution.ljust(15),
        }
        found += [
            SignOn(**envelope),
            SignOff(**envelope),
            Echo(**envelope),
            ParameterDownload(**envelope),
            BlacklistDownload(**envelope, from_version="00000000"),
            BalanceInquiry(**envelope, pan=pan),
            HistoryInquiry(**envelope, pan=pan),
            Settlement(**envelope, pan=pan, amount_fen=1000, card=CardData(), bill=bytes(16)),
            DebitAdvice(**envelope, pan=pan, amount_fen=1000, card=CardData(), bill=bytes(16)),
            EdLoad(**envelope, pan=pan, amount_fen=1000, card=CardData()),
            Void(**envelope, pan=pan, amount_fen=1000, original=OriginalData("000001", "1")),
            Reversal(**envelope, processing_code="000000", txn_type="22", pan=pan),
        ]
    return found


def seed_payloads(requests: Sequence[TerminalMessage]) -> list[bytes]:
    """Each request as sent unMACed and with a zero MAC in field 64."""
    payloads = []
    for request in requests:
        message = build(request)
        payloads.append(CODEC.encode(message))
        with_mac = type(message)(message.mti, {**message.fields, 64: bytes(8)}, message.tpdu,
                                 message.header)  # fmt: skip
        payloads.append(CODEC.encode(with_mac))
    return payloads


def mutated(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One payload: a seed changed by one of the mutations, or random bytes."""
    seed = bytearray(rng.choice(seeds))
    kind = rng.randrange(10)
    if kind == 0:  # bytes flipped
        for _ in range(rng.randint(1, 8)):
            seed[rng.randrange(len(seed))] ^= rng.randint(1, 255)
    elif kind == 1:  # truncated
        del seed[rng.randrange(1, len(seed)) :]
    elif kind == 2:  # extended
        seed += rng.randbytes(rng.randint(1, 200))
    elif kind == 3:  # the secondary bitmap announced
        seed[BITMAP_AT] |= 0x80
    elif kind == 4:  # a garbage MTI
        seed[MTI_AT : MTI_AT + 2] = rng.randbytes(2)
    elif kind == 5:  # a random bitmap
        seed[BITMAP_AT : BITMAP_AT + 8] = rng.randbytes(8)
    elif kind == 6:  # spliced: this one's head, another's tail
        other = rng.choice(seeds)
        seed = seed[: rng.randrange(len(seed))] + other[rng.randrange(len(other)) :]
    elif kind == 7:  # a field's bytes overwritten at random
        at = rng.randrange(BITMAP_AT, len(seed))
        seed[at : at + 4] = rng.randbytes(4)
    elif kind == 8:  # random bytes
        seed = bytearray(rng.randbytes(rng.randint(1, 400)))
    # kind 9: the seed unchanged (a valid frame; sign-ons among them meet the rate limit)
    return bytes(seed) or b"\0"


def breaker(rng: random.Random, payload: bytes) -> bytes:
    """``payload`` behind a length header that does not fit it."""
    kind = rng.randrange(4)
    if kind == 0:  # too short: the rest reads as the next frame's header and body
        return (max(len(payload) - rng.randint(1, 20), 1)).to_bytes(2, "big") + payload
    if kind == 1:  # too long: the daemon waits for bytes that never come
        return (len(payload) + rng.randint(1, 500)).to_bytes(2, "big") + payload
    if kind == 2:  # oversized: more than any frame may be
        return rng.randint(8193, 65535).to_bytes(2, "big") + payload
    return payload[:1]  # half a length header


def make_pool(rng: random.Random, seeds: Sequence[bytes], size: int) -> Pool:
    frames = tuple(encode_frame(mutated(rng, seeds), LengthFormat.BINARY2) for _ in range(size))
    breakers = tuple(breaker(rng, mutated(rng, seeds)) for _ in range(max(size // 10, 1)))
    return Pool(frames, breakers)


@dataclass
class Tally:
    """What the fuzz connections saw."""

    sent: int = 0
    connections: int = 0
    cut_short: int = 0  # the daemon closed before answering every frame it was sent
    stalled: int = 0  # no end within the connection timeout: aborted by us
    resets: int = 0
    codes: Counter[str] = field(default_factory=Counter)


def code_of(reply: bytes) -> str:
    try:
        return peek(reply, 39).get(39, b"-").decode("ascii", "replace")
    except (ValueError, KeyError, IndexError):
        return "?"


async def fuzz_connection(
    port: int, burst: bytes, frames: int, tally: Tally, timeout_s: float
) -> None:
    """Send ``burst`` (``frames`` frames), half-close, read replies until the daemon closes."""
    tally.connections += 1
    tally.sent += frames
    replies = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        tally.resets += 1
        return
    decoder = FrameDecoder(LengthFormat.BINARY2, frame_bytes_max=65535)
    try:
        writer.write(burst)
        writer.write_eof()
        async with asyncio.timeout(timeout_s):
            while data := await reader.read(65536):
                for reply in decoder.feed(data):
                    replies += 1
                    tally.codes[code_of(reply)] += 1
    except TimeoutError:
        tally.stalled += 1
    except OSError:  # reset by the daemon (an oversized header: closed at once)
        tally.resets += 1
    finally:
        writer.transport.abort()
    if replies < frames:
        tally.cut_short += 1


async def fuzz(
    port: int, pool: Pool, args: argparse.Namespace, tally: Tally, rng: random.Random
) -> None:
    deadline = time.monotonic() + args.seconds

    async def worker() -> None:
        while tally.sent < args.frames and time.monotonic() < deadline:
            count = min(rng.randint(1, args.burst), args.frames - tally.sent)
            start = rng.randrange(len(pool.frames) - count + 1)
            chunk = pool.frames[start : start + count]
            burst = b"".join(chunk)
            if rng.random() < args.breakers:
                burst += rng.choice(pool.breakers)
                count += 1
            await fuzz_connection(port, burst, count, tally, args.connection_timeout_s)

    await asyncio.gather(*(worker() for _ in range(args.connections)))


@dataclass
class Legitimate:
    """The legitimate terminal: echoes and balance inquiries, one outstanding, every
    ``interval_s``; each exchange's latency and response code."""

    pos: Pos
    hsm: SoftHsm
    pan: str
    interval_s: float
    latencies_s: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)

    async def run(self, port: int, until: Callable[[], bool]) -> None:
        assert self.pos.keys is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = FrameDecoder(LengthFormat.BINARY2)
        try:
            for number in range(10_000_000):  # bounded by ``until`` long before this
                if until():
                    return
                request: TerminalMessage = (
                    Echo(**self.pos.envelope())
                    if number % 2 == 0
                    else BalanceInquiry(**self.pos.envelope(), pan=self.pan)
                )
                payload = await signed(self.hsm, self.pos.keys, request)
                started = time.perf_counter()
                writer.write(encode_frame(payload, LengthFormat.BINARY2))
                frames: list[bytes] = []
                while not frames:
                    data = await asyncio.wait_for(reader.read(65536), timeout=30)
                    if not data:
                        raise RuntimeError("the daemon closed the legitimate terminal")
                    frames = decoder.feed(data)
                self.latencies_s.append(time.perf_counter() - started)
                self.codes[parse(CODEC.decode(frames[0])).response_code] += 1
                await asyncio.sleep(self.interval_s)
        finally:
            writer.close()

    def summary(self) -> str:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return "no exchanges"
        p99 = ordered[max(int(len(ordered) * 0.99) - 1, 0)]
        return (
            f"{len(ordered):6d} exchanges  p50 {statistics.median(ordered) * 1000:6.2f} ms  "
            f"p99 {p99 * 1000:6.2f} ms  max {ordered[-1] * 1000:7.2f} ms  codes {dict(self.codes)}"
        )


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the writer), KiB."""
    total = 0
    for each in (pid, *children(pid)):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


async def run(home: Path, port: int, pid: int, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    with sqlite3.connect(home / "medswitch.db") as connection:
        terminals = connection.execute(
            "SELECT id, institution_id FROM terminals WHERE kind = 'pos' ORDER BY id"
        ).fetchall()
        (pan,) = connection.execute("SELECT card_no FROM cards ORDER BY card_no").fetchone()
    hsm = open_soft_hsm(home, component_files_of(demo_keys.custodian_files(home)))
    legit_id, institution = terminals[0]
    pos = Pos(legit_id, institution.ljust(15), psam=None)  # type: ignore[arg-type]
    await sign_on(port, hsm, pos)
    started = time.perf_counter()
    seeds = seed_payloads(seed_requests(terminals[1 : 1 + FUZZ_TERMINALS], pan))
    pool = make_pool(rng, seeds, args.pool)
    print(
        f"pool: {len(pool.frames):,} frames and {len(pool.breakers):,} breakers from "
        f"{len(seeds)} seeds in {time.perf_counter() - started:.1f} s"
    )
    baseline = Legitimate(pos, hsm, pan, args.interval_s)
    ends = time.monotonic() + args.baseline_s
    await baseline.run(port, lambda: time.monotonic() > ends)
    tally = Tally()
    rss = [(0, rss_kib(pid))]
    done = asyncio.Event()

    async def sample() -> None:
        mark = args.rss_every
        while not done.is_set():
            if tally.sent >= mark:
                rss.append((tally.sent, rss_kib(pid)))
                mark += args.rss_every
            await asyncio.sleep(0.2)

    during = Legitimate(pos, hsm, pan, args.interval_s)
    sampler = asyncio.ensure_future(sample())
    legit = asyncio.ensure_future(during.run(port, done.is_set))
    started = time.perf_counter()
    try:
        await fuzz(port, pool, args, tally, rng)
    finally:
        done.set()
        await legit
        await sampler
    elapsed = time.perf_counter() - started
    rss.append((tally.sent, rss_kib(pid)))
    after = Legitimate(pos, hsm, pan, 0.0)
    ends = time.monotonic() + 1.0
    await after.run(port, lambda: time.monotonic() > ends)
    alive = after.codes.get("00", 0) > 0
    print(f"fuzz: {tally.sent:,} frames on {tally.connections:,} connections in {elapsed:.0f} s")
    print(f"  ({tally.sent / elapsed:,.0f} frames/s), {args.connections} connections at once")
    print(f"replies by response code: {dict(tally.codes.most_common())}")
    print(
        f"connections the daemon ended before answering every frame: {tally.cut_short:,}; "
        f"reset: {tally.resets:,}; stalled past {args.connection_timeout_s:.0f} s: {tally.stalled}"
    )
    print("daemon RSS (with its writer), MiB at frames sent: " + ", ".join(
        f"{sent:,}: {kib / 1024:.0f}" for sent, kib in rss))  # fmt: skip
    print(f"legitimate terminal ({legit_id}), echo and balance inquiry every "
          f"{args.interval_s * 1000:.0f} ms:")  # fmt: skip
    print(f"  baseline, no fuzz  {baseline.summary()}")
    print(f"  during the fuzz    {during.summary()}")
    print(f"  after the fuzz     {after.summary()}")
    print(f"daemon alive and answering at the end: {'yes' if alive else 'NO'}")
    if not alive:
        raise SystemExit("the daemon did not survive the fuzz")


@contextlib.contextmanager
def daemon(home: Path, log: Path) -> Iterator[tuple[int, int]]:
    """`medswitch serve` on ``home``, its log lines into ``log``; (its pid, its terminal port);
    SIGTERM after use (SIGKILL if it has not stopped within 30 s)."""
    script = str(Path(sys.executable).parent / "medswitch")
    with log.open("w") as sink:
        server = subprocess.Popen(
            [script, "serve"],
            env={**os.environ, "MEDSWITCH_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    try:
        assert server.stdout is not None
        match = re.search(r"terminals on 127\.0\.0\.1:(\d+)", server.stdout.readline())
        assert match, "the daemon did not start"
        yield server.pid, int(match.group(1))
    finally:
        stop(server)


def log_summary(log: Path) -> tuple[Counter[str], Counter[str]]:
    """The daemon's log lines by level, and its errors by message and exception's last line."""
    levels: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with log.open() as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                levels["(not JSON)"] += 1
                continue
            levels[entry.get("level", "?")] += 1
            if entry.get("level") in ("error", "critical"):
                last = (entry.get("error") or "").strip().splitlines()[-1:] or [""]
                errors[f"{entry.get('msg', '')} | {last[0][:160]}"] += 1
    return levels, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=1_000_000, help="fuzz frames in all")
    parser.add_argument("--seconds", type=float, default=1800.0, help="the fuzz's time bound")
    parser.add_argument("--connections", type=int, default=16, help="fuzz connections at once")
    parser.add_argument("--burst", type=int, default=64, help="most frames per connection")
    parser.add_argument("--breakers", type=float, default=0.2, help="share ending in a breaker")
    parser.add_argument("--pool", type=int, default=20_000, help="pre-built mutated frames")
    parser.add_argument("--connection-timeout-s", type=float, default=60.0)
    parser.add_argument("--rss-every", type=int, default=100_000, help="frames between samples")
    parser.add_argument("--interval-s", type=float, default=0.02, help="legitimate pacing")
    parser.add_argument("--baseline-s", type=float, default=20.0, help="legitimate, no fuzz")
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        database = home / "medswitch.db"
        init_demo(database, 10, personal=asyncio.run(demo_personal_keys(home)))
        with sqlite3.connect(database) as connection:
            terminals = [r[0] for r in connection.execute("SELECT id FROM terminals")]
        demo_keys.write_test_components(home)
        asyncio.run(demo_keys.provision(home, terminals))
        demo_keys.write_config(home, terminal_port=0, http_port=0)
        log = home / "daemon.log"
        with daemon(home, log) as (pid, port):
            uvloop.run(run(home, port, pid, args))
        levels, errors = log_summary(log)
        print(f"daemon log lines by level: {dict(levels)}")
        for message, count in errors.most_common(10):
            print(f"  error x{count}: {message}")


if __name__ == "__main__":
    main()

"""`medswitch serve --workers N` on PostgreSQL: the settlement load of ``bench_settle`` (N POS,
each settling HIS bills — 0200 with the bill under the TDK — and confirming the card's debit —
0220 with its TAC — one outstanding per POS) against 1 worker and against N workers, each run
on a fresh PostgreSQL schema with the same demo deployment, in the same process; and, first,
the same load on the embedded SQLite default (as the PostgreSQL runs: nothing pinned), so the
two are compared on the same box in the same minutes.

    python -m bench.bench_workers [--workers 1,2] [--terminals 20] [--bills 1200] [--rounds 1]
        [--no-embedded] [--profile out.txt [--profile-gil]]   # py-spy a worker: out-1w.txt, ...
        [--statements]   # per exchange, from pg_stat_statements (bench.pg_statements)
        [--direct-bills]   # the bills written to the database, not through the HIS API

The bills are submitted to the daemon's HIS API before the timed phase, as the embedded run
(and bench_settle, and a hospital's charging system) submits them: the worker that took a bill
has it as it wrote it when the bill's settlement comes (with 2 workers, the HIS connection and
the POS's may reach different ones). Until 2026-12-08 they were written to the database
directly (``--direct-bills``), so that no worker had them and every ledger batch read them.

With ``--rounds N`` the whole set runs N times, its runs alternated (embedded, 1 worker, 2, then
again), and a summary gives each one's median and range: on a shared, noisy machine one run's
rate says little.

Everything a terminal computes (cards' purchases through their PSAMs, MACs, TDK encryption) is
done before the timed phase, with the same simulators and HSM code as bench_settle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import uvloop

from bench import bench_settle, pg_statements
from bench.bench_settle import (
    Submitted,
    build_lanes,
    demo_home,
    drive_once,
    his_submit,
    profiled,
)
from bench.bench_switch import children, processes, report, stop
from bench.pg_waits import WaitSampler, cpu_s
from bench.pos_side import Lanes
from hsm.keys import KeyUsage
from ledger.demo import init_demo
from ledger.medical.bills import Submission
from ledger.medical.catalogue import CatalogueVersion
from ledger.medical.policy import EXAMPLE, parse_policy
from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import ReferenceData, SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.pg_bridge import PgBridge
from ledger.pg_engine import PgEngine
from messages.codec import Codec
from messages.spec_terminal import TERMINAL
from simulators.factory import ChipMaker
from switch.demo import keys as demo_keys
from switch.demo.medical import CREDENTIALS_FILE, ITEMS
from switch.key_home import component_files_of, open_soft_hsm

DSN = os.environ.get("MEDSWITCH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CODEC = Codec(TERMINAL)
PROFILE = os.environ.get("BENCH_WORKERS_CPROFILE", "")  # a file: cProfile the 1-worker daemon
U = KeyUsage


def reference_data(engine: PgEngine, home: Path, medical: list[str]) -> None:
    """The demo's catalogue and this year's policy, and the ``medical`` institutions' HIS
    credentials in the home's file (as switch.demo.medical on SQLite)."""
    now = dt.datetime.now(dt.UTC)
    micros = int(now.timestamp() * 1_000_000)
    reference = ReferenceData(engine)  # type: ignore[arg-type]
    catalogue = CatalogueVersion(1, dt.date(now.year, 1, 1), {i.code: i for i in ITEMS})
    digest = hashlib.sha256(repr(sorted(catalogue.items)).encode()).hexdigest()
    reference.add_catalogue(catalogue, digest, micros, "bench")
    text = EXAMPLE.replace(f"year = {parse_policy(EXAMPLE).year}", f"year = {now.year}")
    reference.set_policy(text, micros, "bench")
    lines = [f"{i} {reference.issue_credential(i, micros)}" for i in medical]
    credentials = home / CREDENTIALS_FILE
    credentials.touch(mode=0o600)  # tokens: the owner's only, as the demo writes them
    credentials.write_text("\n".join(lines) + "\n")


def deploy(home: Path, url: str, cardholders: int) -> ChipMaker:
    """A demo deployment in the (empty) database at ``url``: institutions, terminals with their
    TMKs in the home's key store, funded cards, the catalogue and policy; the daemon's config
    (ports from the environment); the chip maker the POS's cards come from."""
    personal = asyncio.run(demo_keys.demo_personal_keys(home))
    init_demo(url, cardholders, personal=personal)
    files = demo_keys.write_test_components(home)
    hsm = open_soft_hsm(home, component_files_of(files))
    maker = uvloop.run(ChipMaker.form(hsm, "card/", demo_keys._now()))
    bridge = PgBridge(url)
    try:
        db = bridge.connection()
        rows = db.execute("SELECT id FROM terminals").fetchall()
        uvloop.run(demo_keys.provision(home, [row[0] for row in rows]))
        medical = db.execute(
            "SELECT id FROM institutions WHERE kind IN ('hospital', 'pharmacy') ORDER BY id"
        ).fetchall()
        reference_data(PgEngine(bridge), home, [row[0] for row in medical])
    finally:
        bridge.close()
    demo_keys.write_config(home, terminal_port=0, http_port=0)
    return maker


async def prepare(
    home: Path,
    url: str,
    port: int,
    maker: ChipMaker,
    terminals: int,
    bills: int,
    http_port: int | None = None,
) -> tuple[Lanes, int]:
    """Cards, PSAMs and each terminal's frames as bench_settle's; the bills submitted to the
    daemon's HIS API on ``http_port`` (as bench_settle: the worker that took a bill has it as
    it wrote it), or with None written to the database directly (no worker has them)."""
    hsm = open_soft_hsm(home, component_files_of(demo_keys.custodian_files(home)))
    now = demo_keys._now()
    bridge = PgBridge(url)
    engine = PgEngine(bridge)
    try:
        db = bridge.connection()
        cards = db.execute(
            "SELECT card_no, application_serial FROM cards ORDER BY card_no"
        ).fetchall()
        psams = db.execute(
            "SELECT serial, psam_terminal_no, institution_id, terminal_id FROM psams"
            " ORDER BY serial LIMIT ?",
            (terminals,),
        ).fetchall()
        store = SqlMedicalStore(engine)
        medical = MedicalService(store, SqlDirectory(engine))  # type: ignore[arg-type]

        async def submit(institution: str, submission: Submission) -> Submitted:
            now_utc = dt.datetime.now(dt.UTC)
            submit_bill = medical.submit_bill
            record, _ = await asyncio.to_thread(submit_bill, institution, submission, now_utc)
            return Submitted(record.bill_id, record.split.personal_account_fen)

        if http_port is None:
            lanes = await build_lanes(port, hsm, maker, cards, psams, submit, bills, now)
        else:
            async with aiohttp.ClientSession() as session:
                through_his = his_submit(session, http_port, home)
                lanes = await build_lanes(port, hsm, maker, cards, psams, through_his, bills, now)
        store.close()
        return lanes, len(cards)
    finally:
        bridge.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mean_latencies(http_port: int) -> dict[str, float]:
    """Mean seconds of each histogram series of the worker that answers the scrape."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"medswitch_(\w+)_seconds_(sum|count)\{(.*)\} (\S+)", line)
        if match:
            name = f"{match[1]} {match[3].split('=')[-1].strip(chr(34))}"
            (sums if match[2] == "sum" else counts)[name] = float(match[4])
    return {name: sums[name] / counts[name] for name in sums if counts.get(name)}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a daemon: its parent process and its workers."""
    return cpu_s(pid) + sum(cpu_s(child) for child in children(pid))


@contextlib.contextmanager
def daemon(home: Path, url: str, workers: int, port: int, http_port: int) -> Iterator[int]:
    script = str(Path(sys.executable).parent / "medswitch")
    env = {
        **os.environ,
        "MEDSWITCH_HOME": str(home),
        "MEDSWITCH_DATABASE_URL": url,
        "MEDSWITCH_TERMINAL_PORT": str(port),
        "MEDSWITCH_HTTP_PORT": str(http_port),
        "MEDSWITCH_HIS_RATE_PER_S": "0",  # bills are prepared faster than a HIS submits
    }
    command = [script, "serve", "--workers", str(workers)]
    if PROFILE and workers == 1:  # cProfile of the one worker, written when it stops
        command = [sys.executable, "-m", "cProfile", "-o", PROFILE, *command]
    server = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        for _ in range(workers):
            line = server.stdout.readline()
            assert "medswitch serving" in line, f"the daemon did not start: {line!r}"
        yield server.pid
    finally:
        stop(server, timeout_s=60)


async def _schema(action: str, name: str) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(
            f"{action} SCHEMA {name}" + (" CASCADE" if action == "DROP" else "")
        )
    finally:
        await connection.close()


@dataclass(frozen=True)
class Measured:
    """One run: exchanges/s, each exchange's latency (s), the response codes seen, and CPU per
    exchange in ms — the daemon's (with its writer process, embedded) and PostgreSQL's backends'
    (None: embedded)."""

    rate: float
    latencies: list[float]
    codes: dict[str, int]
    daemon_ms: float
    backends_ms: float | None = None

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0.0


def run_one(workers: int, args: argparse.Namespace) -> Measured:
    schema = f"bench_{secrets.token_hex(4)}"
    asyncio.run(_schema("CREATE", schema))
    url = f"{DSN}?schema={schema}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            maker = deploy(home, url, args.cardholders)
            port, http_port = free_port(), free_port()
            with daemon(home, url, workers, port, http_port) as pid:
                started = time.perf_counter()
                his = None if args.direct_bills else http_port
                lanes, cards = uvloop.run(
                    prepare(home, url, port, maker, args.terminals, args.bills, his)
                )
                print(
                    f"{workers} worker(s): prepared {args.bills} bills on {cards} cards and "
                    f"{len(lanes)} POS in {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
                # the one worker is the parent; of several, the first (the parent only waits)
                spied = pid if workers == 1 else children(pid)[0]
                profile = args.profile and args.profile.with_stem(f"{args.profile.stem}-{workers}w")
                counting = args.statements and uvloop.run(pg_statements.reset(DSN))
                with WaitSampler(DSN) as waits, profiled(spied, profile, gil=args.profile_gil):
                    cpu_at_start = tree_cpu_s(pid)
                    result = uvloop.run(drive_once(port, lanes))
                    daemon_cpu_s = tree_cpu_s(pid) - cpu_at_start
                exchanges = sum(len(frames) for frames in lanes)
                print(
                    f"  CPU per exchange: daemon {daemon_cpu_s / exchanges * 1000:.2f} ms,"
                    f" PostgreSQL backends {waits.cpu_s / exchanges * 1000:.2f} ms ("
                    + ", ".join(
                        f"{name} {used / exchanges * 1000:.2f}"
                        for name, used in sorted(waits.cpu_by_application.items())
                    )
                    + ")"
                )
                print("  PostgreSQL backends (pg_stat_activity samples):\n" + waits.report())
                if counting:
                    print(uvloop.run(pg_statements.report(DSN, exchanges)))
                means = mean_latencies(http_port)
                slow = sorted(means.items(), key=lambda item: -item[1])[:8]
                print(
                    "  mean latency (one worker): "
                    + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in slow)
                )
                return Measured(
                    *result, daemon_cpu_s / exchanges * 1000, waits.cpu_s / exchanges * 1000
                )
    finally:
        asyncio.run(_schema("DROP", schema))


def run_embedded(args: argparse.Namespace) -> Measured:
    """The same load on the embedded SQLite default: bench_settle's deployment and daemon, but
    unpinned, with its ledger writer process counted in the daemon's CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        maker = demo_home(home, args.cardholders)
        pids: dict[str, int] = {}
        with processes(home, pids) as ports:
            started = time.perf_counter()
            lanes, cards = uvloop.run(
                bench_settle.prepare(home, ports.terminal, ports.http, maker, args)
            )
            print(
                f"embedded SQLite: prepared {args.bills} bills on {cards} cards and "
                f"{len(lanes)} POS in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            cpu_at_start = tree_cpu_s(pids["daemon"])
            result = uvloop.run(drive_once(ports.terminal, lanes))
            daemon_cpu_s = tree_cpu_s(pids["daemon"]) - cpu_at_start
        exchanges = sum(len(frames) for frames in lanes)
        print(f"  CPU per exchange: daemon and its writer {daemon_cpu_s / exchanges * 1000:.2f} ms")
        return Measured(*result, daemon_cpu_s / exchanges * 1000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--bills", type=int, default=1200)
    parser.add_argument("--cardholders", type=int, default=120)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the whole set this many times, alternated"
    )
    parser.add_argument(
        "--direct-bills",
        action="store_true",
        help="write the bills to the database (before 2026-12-08: no worker has them), not"
        " through the daemon's HIS API as the embedded run and bench_settle submit them",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy record a worker (with N workers, the first) into this file, its stem"
        " suffixed -1w, -2w, ... by the worker count",
    )
    parser.add_argument("--profile-gil", action="store_true", help="sample the GIL holder only")
    parser.add_argument(
        "--no-embedded",
        action="store_true",
        help="skip the embedded SQLite default's run (by default measured first, same load)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="statements per exchange (a server preloading pg_stat_statements)",
    )
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    results: dict[str, list[Measured]] = {}
    for done in range(args.rounds):
        if args.rounds > 1:
            print(f"round {done + 1} of {args.rounds}", flush=True)
        if not args.no_embedded:
            results.setdefault("embedded SQLite default", []).append(run_embedded(args))
        for workers in (int(n) for n in args.workers.split(",")):
            measured = run_one(workers, args)
            results.setdefault(f"PostgreSQL --workers {workers}", []).append(measured)
    print(f"{args.terminals} POS, one outstanding each; settlement + advice per bill:")
    for name, runs in results.items():
        for run in runs:
            report(name, run.rate, run.latencies)
            print(f"{'':34s} response codes {run.codes}")
    if args.rounds > 1:
        print(f"medians (ranges) of {args.rounds} alternated rounds:")
        for name, runs in results.items():
            print(summary(name, runs))


def summary(name: str, runs: list[Measured]) -> str:
    """One line: the runs' median rate and its range, their p99s' range, median CPU."""

    def spread(values: list[float], form: str) -> str:
        return f"{statistics.median(values):{form}} ({min(values):{form}}–{max(values):{form}})"

    line = (
        f"{name:34s} {spread([run.rate for run in runs], ',.0f')} exchanges/s,"
        f" p99 {min(run.p99_ms for run in runs):.1f}–{max(run.p99_ms for run in runs):.1f} ms,"
        f" CPU per exchange: daemon {statistics.median(run.daemon_ms for run in runs):.2f} ms"
    )
    backends = [run.backends_ms for run in runs if run.backends_ms is not None]
    return line + (f", backends {statistics.median(backends):.2f} ms" if backends else "")


if __name__ == "__main__":
    main()

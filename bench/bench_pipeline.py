"""The daemon's pipeline without sockets: `bench_settle`'s settlements and advices handed
straight to the terminal service of an `App` running in this process, so the CPU each exchange
costs the event loop and the ledger's writer thread is measured apart from the kernel, the
generator and a noisy neighbour.

    python -m bench.bench_pipeline [--terminals 20] [--bills 3000] [--cardholders 300]
                                   [--profile out.prof]

The set-up (cards loaded at a kiosk, POS signed on) still goes over the daemon's listener, as
in `bench_settle`. ``--profile`` writes a cProfile of the timed phase (the event loop's thread
only) for ``python -m pstats``; its clock inflates small calls, so read it for call counts and
shares, and the unprofiled run for the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvloop

from bench.bench_settle import demo_home, prepare
from bench.bench_switch import CpuMeter, children
from bench.pos_side import Lanes, peek
from simulators.factory import ChipMaker
from switch import logs
from switch.app import open_app, settle_garbage_collector
from switch.config import load
from switch.key_home import component_files_of, soft_hsm_over
from switch.keystore_file import FileKeyStore
from switch.sessions import Sessions


async def run(home: Path, args: argparse.Namespace, maker: ChipMaker) -> None:
    """`medswitch serve`'s App on ``home`` in this loop, its message log on /dev/null."""
    config = load(environ={**os.environ, "MEDSWITCH_HOME": str(home)})
    files = FileKeyStore(home / "keys.jsonl")
    components = component_files_of([Path(f) for f in config.hsm.lmk_components])
    app = await open_app(config, soft_hsm_over(home, components, files), Sessions(files))
    await app.start()
    try:
        lanes, _ = await prepare(home, app.terminal_port, app.http_port, maker, args)
        settle_garbage_collector()  # as `medswitch serve` does once it has started
        assert app.terminal_listener is not None
        await drive(app.terminal_listener.handler, lanes, args.profile)
    finally:
        await app.stop()


async def drive(handler, lanes: Lanes, profile: Path | None) -> None:  # type: ignore[no-untyped-def]
    """Every lane's frames in order, one outstanding per lane, as the POS would send them."""
    codes: dict[str, int] = {}

    async def lane(frames: list[tuple[bytes, bytes]], peer: str) -> None:
        for payload, _ in frames:
            answer = await handler(payload, peer)
            code = peek(answer).get(39, b"").decode() if answer else "none"
            codes[code] = codes.get(code, 0) + 1

    exchanges = sum(len(frames) for frames in lanes)
    writers = [CpuMeter(pid) for pid in children(os.getpid())]  # the ledger's writer process
    for writer in writers:
        writer.start()
    writer_before = _other_threads_s()
    profiler = cProfile.Profile() if profile else None
    cpu, wall = time.thread_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    await asyncio.gather(*(lane(f, f"127.0.0.1:{n}") for n, f in enumerate(lanes)))
    if profiler:
        profiler.disable()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    others = _other_threads_s() - writer_before
    for writer in writers:
        writer.stop()
    print(f"{len(lanes)} lanes, {exchanges} exchanges in {wall:.2f} s: {exchanges / wall:,.0f}/s")
    print(
        f"CPU per exchange: event loop {cpu / exchanges * 1e6:.0f} us, "
        f"other threads {others / exchanges * 1e6:.0f} us"
        + "".join(f", writer process {w.total_s / exchanges * 1e6:.0f} us" for w in writers)
    )
    print(f"response codes: {codes}")
    if profiler and profile:
        profiler.dump_stats(profile)
        print(f"profile of the event loop written to {profile}")


def _other_threads_s() -> float:
    """CPU seconds of this process's threads other than the calling one (Linux /proc)."""
    me = threading.get_native_id()
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        if int(task.name) == me:
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--bills", type=int, default=3000)
    parser.add_argument("--cardholders", type=int, default=300)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        maker = demo_home(home, args.cardholders)
        stderr = os.dup(2)
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        try:
            logs.configure(logging.INFO)
            uvloop.run(run(home, args, maker))
        finally:
            os.dup2(stderr, 2)


if __name__ == "__main__":
    main()

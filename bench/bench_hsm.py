"""HSM throughput: MAC verify (CUP-ECB, X9.19), PIN translate, a load's MAC1 verify + MAC2 and
the opening of a visit copy (a settlement's card_visit_file opens up to 9),
in process (SoftHsm) and over the network HSM on 127.0.0.1 (server in another process,
requests pipelined on one connection), next to the bare primitive.

    python -m bench.bench_hsm [--seconds 2] [--in-flight 64] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from hsm import mac, pboc
from hsm.des import Des, kcv
from hsm.interface import Hsm, MacAlgorithm, OnlineTxn
from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import TEST_ONLY_COMPONENTS, Component, Lmk, combine
from hsm.pinblock import encode_format0
from hsm.soft import SoftHsm

T = TypeVar("T")
U = KeyUsage
NOW = datetime(2026, 1, 1)
KEYS = {
    "mak": (U.MAK, "0723C80DB5F4CD3D0723C80DB5F4CD3D"),
    "zak": (U.ZAK, "F1E2D3C4B5A69788796A5B4C3D2E1F00"),
    "pik": (U.PIK, "0123456789ABCDEFFEDCBA9876543210"),
    "zpk": (U.ZPK, "89ABCDEF01234567FEDCBA9876543210"),
    "load": (U.MK_LOAD, "00112233445566778899AABBCCDDEEFF"),
}
REFS = {alias: KeyRef(alias, 1, usage) for alias, (usage, _) in KEYS.items()}
PERSONAL = KeyRef("centre/PERSONAL_DATA", 1, U.PERSONAL_DATA)
VISIT_CONTEXT = b"visit|0000000012345678|9054CA9CBE34A38E"  # a visit copy's associated data
MAB = bytes(range(96))  # about a 0200's MAB
PAN = "6222021234567890123"
SERIAL = bytes.fromhex("0000000012345678")
HOST_TIME = datetime(2026, 1, 1, 12, 0, 0)
LOADS = 5000  # distinct cards: more than the HSM's session and card-key caches hold


async def make_soft() -> SoftHsm:
    parts = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]  # its keys are published ones
    soft = SoftHsm(Lmk(parts, kcv(combine(parts))), MemoryKeyStore())
    for alias, (usage, value) in KEYS.items():
        await soft.form_key(alias, usage, [Component(bytes.fromhex(value))], now=NOW)
    await soft.generate_key(PERSONAL.alias, U.PERSONAL_DATA, now=NOW)
    return soft


def fixtures() -> tuple[bytes, bytes, list[tuple[CardKeyPath, OnlineTxn]]]:
    """A CUP MAC, a PIN block under the PIK, and loads of many cards (each card and random
    different, so neither the card-key nor the session cache helps across loads)."""
    mak = Des(bytes.fromhex(KEYS["mak"][1]))
    cup_mac = mac.cup_ecb(mak, MAB)
    pik = Des(bytes.fromhex(KEYS["pik"][1]))
    block = pik.encrypt_ecb(encode_format0("123456", PAN))
    master = Des(bytes.fromhex(KEYS["load"][1]))
    terminal = bytes.fromhex("001122334455")
    loads = []
    for i in range(LOADS):
        serial = (0x12345678_00000000 + i).to_bytes(8, "big")
        rnd, ctr = (0xC903814D + i).to_bytes(4, "big"), i % 65536
        session = Des(pboc.online_session_key(Des(pboc.diversify(master, serial)), rnd, ctr))
        mac1 = mac.pboc_mac(session, pboc.load_mac1_data(1000, 2000, 1, terminal))
        txn = OnlineTxn(1, 1000, 2000, ctr, rnd, terminal, mac1)
        loads.append((CardKeyPath(REFS["load"], (serial,)), txn))
    return cup_mac, block, loads


def operations(hsm: Hsm) -> dict[str, Callable[[], Awaitable[object]]]:
    cup_mac, block, loads = fixtures()
    cycle = itertools.cycle(loads)
    sealed: list[bytes] = []

    async def load() -> object:
        card, txn = next(cycle)
        assert await hsm.verify_mac1(card, txn)
        return await hsm.generate_mac2(card, txn, HOST_TIME)

    async def open_visit() -> object:  # a settlement's card_visit_file: one per older record
        if not sealed:
            sealed.append(await hsm.encrypt_personal(PERSONAL, VISIT_CONTEXT, bytes(72)))
        return await hsm.decrypt_personal(PERSONAL, VISIT_CONTEXT, sealed[0])

    async def verify_cup() -> object:
        assert await hsm.verify_mac(REFS["mak"], MacAlgorithm.CUP_ECB, MAB, cup_mac)
        return None

    return {
        "MAC verify CUP-ECB": verify_cup,
        "MAC generate X9.19": lambda: hsm.generate_mac(REFS["zak"], MacAlgorithm.X9_19, MAB),
        "PIN translate PIK->ZPK": lambda: hsm.translate_pin(REFS["pik"], REFS["zpk"], block, PAN),
        "load MAC1 verify + MAC2 (new card each)": load,
        "visit copy open (PERSONAL_DATA)": open_visit,
    }


async def sequential_rate(op: Callable[[], Awaitable[object]], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            await op()
        count += 100
    return count / (time.perf_counter() - start)


async def pipelined_rate(
    op: Callable[[], Awaitable[object]], seconds: float, in_flight: int
) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await op()
            count += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - start)


def primitive_rates(seconds: float) -> dict[str, float]:
    mak = Des(bytes.fromhex(KEYS["mak"][1]))
    zak = bytes.fromhex(KEYS["zak"][1])
    left, full = Des(zak[:8]), Des(zak)
    out = {}
    primitives: list[tuple[str, Callable[[], bytes]]] = [
        ("CUP-ECB MAC (primitive)", lambda: mac.cup_ecb(mak, MAB)),
        ("X9.19 MAC (primitive)", lambda: mac.iso9797_alg3(left, full, MAB)),
    ]
    for name, op in primitives:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(1000):
                op()
            count += 1000
        out[name] = count / (time.perf_counter() - start)
    return out


def _serve(port_pipe: multiprocessing.connection.Connection, use_uvloop: bool) -> None:
    from switch.hsm_net import HsmServer

    async def run() -> None:
        server = HsmServer(await make_soft())
        port_pipe.send(await server.start("127.0.0.1", 0))
        await asyncio.Event().wait()

    _run(run(), use_uvloop)


def _run(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


async def measure(seconds: float, in_flight: int, use_uvloop: bool) -> dict[str, float]:
    from switch.hsm_net import HsmClient

    results: dict[str, float] = {}
    soft = await make_soft()
    for name, op in operations(soft).items():
        results[f"{name} [in process]"] = await sequential_rate(op, seconds)

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=_serve, args=(child, use_uvloop), daemon=True)
    server.start()
    try:
        port = parent.recv()
        client = await HsmClient.connect("127.0.0.1", port)
        try:
            for name, op in operations(client).items():
                results[f"{name} [network, 1 in flight]"] = await sequential_rate(op, seconds / 2)
                results[f"{name} [network, {in_flight} in flight]"] = await pipelined_rate(
                    op, seconds, in_flight
                )
        finally:
            await client.close()
    finally:
        server.terminate()
        server.join()
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true", help="uvloop on both sides")
    args = parser.parse_args(argv)
    results = primitive_rates(args.seconds / 2)
    results.update(_run(measure(args.seconds, args.in_flight, args.uvloop), args.uvloop))
    for name, value in results.items():
        print(f"{name:52s} {value:10,.0f} /s  {1e6 / value:8.1f} µs")
    return results


if __name__ == "__main__":
    main()

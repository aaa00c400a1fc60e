"""The outbound bank link: savings debits per second (MACed both ways, X9.19 under the ZAK)
through a pool of 1 (the baseline) and N connections to the issuer simulator on loopback, with
C requests in flight. Both ends share the one core this runs on, so the numbers compare the
pool sizes of one run, not a bank's capacity.

    python -m bench.bench_bank_link [--requests 4000] [--in-flight 32] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime

from hsm.des import kcv
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from messages.bank import SavingsDebit
from simulators.bank import BankIssuer
from switch.bank.link import BankLinkPool, OutboundSettings

PAN = "6212340000000016"


async def debits_per_s(requests: int, in_flight: int, connections: int) -> float:
    parts = [Component(bytes(range(16))), Component(bytes(range(16, 32)))]
    hsm = SoftHsm(Lmk(parts, kcv(combine(parts))), MemoryKeyStore())
    zak = await hsm.generate_key("bench/ZAK", KeyUsage.ZAK, now=datetime(2026, 1, 1))
    issuer = BankIssuer(hsm, zak)
    await issuer.start()
    settings = OutboundSettings("127.0.0.1", issuer.port, "09990000", timeout_s=30.0)
    pool = BankLinkPool.open(settings, hsm, zak, datetime.now, connections)
    pool.start()
    try:
        for _ in range(200):  # bounded wait for every connection to sign on
            if all(client.up for client in pool.clients):
                break
            await asyncio.sleep(0.05)
        queue = iter(range(requests))

        async def worker() -> None:
            for n in queue:
                debit = SavingsDebit(
                    **pool.envelope(), pan=PAN, amount_fen=100 + n % 50, pin_block=bytes(8)
                )
                reply = await pool.request(debit)
                assert reply.response_code == "00"

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return requests / (time.perf_counter() - start)
    finally:
        await pool.close()
        await issuer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    baseline = asyncio.run(debits_per_s(args.requests, args.in_flight, 1))
    pooled = asyncio.run(debits_per_s(args.requests, args.in_flight, args.connections))
    print(f"savings debits/s, 1 connection (baseline): {baseline:,.0f}")
    print(
        f"savings debits/s, {args.connections} connections: {pooled:,.0f}"
        f" ({pooled / baseline:.2f}x baseline)"
    )


if __name__ == "__main__":
    main()

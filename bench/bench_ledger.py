"""Ledger throughput: durable transfers/s at concurrency 1, 8 and 64 on SQLite (group commit on one
writer thread) and PostgreSQL (asyncpg, group commit), next to each database's raw commit rate
(one small INSERT per durable commit) measured in the same run; then whole ED load cycles through
the business events (balance check with proof, into doubt, confirmed) at concurrency 8 and 64.

    python -m bench.bench_ledger [--seconds 3] [--backend sqlite --backend postgres] [--dsn URL]

Each run is bounded in time and count; the SQLite files live in a temporary directory on the
working disk (not /dev/shm: fsync must be real), PostgreSQL uses a temporary schema, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger import events as ev
from ledger.core import Ledger, Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.sqlite_ledger import SqliteLedger, connect

CONCURRENCY = (1, 8, 64)
LOAD_CONCURRENCY = (8, 64)
TRANSFERS_MAX = 200_000  # per measurement, whatever the duration
DSN = os.environ.get("MEDSWITCH_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Row:
    backend: str
    what: str
    concurrency: int
    count: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def raw_sqlite_commits(directory: Path, seconds: float) -> Row:
    """One INSERT per BEGIN/COMMIT in WAL with synchronous=FULL."""
    connection = connect(directory / "raw.db")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and count < TRANSFERS_MAX:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (v) VALUES (?)", (count,))
        connection.execute("COMMIT")
        count += 1
    elapsed = time.perf_counter() - start
    connection.close()
    return Row("sqlite", "raw commit (1 insert/commit)", 1, count, elapsed)


async def raw_pg_commits(dsn: str, schema: str, seconds: float, concurrency: int) -> Row:
    import asyncpg  # type: ignore[import-untyped]

    settings = {"search_path": schema}
    connections = [await asyncpg.connect(dsn, server_settings=settings) for _ in range(concurrency)]
    await connections[0].execute(
        "CREATE TABLE IF NOT EXISTS raw_t (id bigserial PRIMARY KEY, v bigint)"
    )
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def loop(index: int) -> None:
        connection = connections[index]
        while time.perf_counter() < deadline and counts[index] < TRANSFERS_MAX:
            async with connection.transaction():
                await connection.execute("INSERT INTO raw_t (v) VALUES ($1)", counts[index])
            counts[index] += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    for connection in connections:
        await connection.close()
    return Row("postgres", "raw commit (1 insert/commit)", concurrency, sum(counts), elapsed)


async def transfers_per_s(ledger: Ledger, backend: str, concurrency: int, seconds: float) -> Row:
    """`concurrency` callers, each posting card debits one at a time from its own card."""
    run = secrets.token_hex(3)
    accounts = [new_account(K.INSTITUTION_PAYABLE_INSURANCE, "h1")]
    accounts += [new_account(K.CARD_ED_SHADOW, f"{run}-{i}") for i in range(concurrency)]
    await ledger.open_accounts(accounts)
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency
    limit = TRANSFERS_MAX // concurrency

    async def caller(index: int) -> None:
        debit = accounts[index + 1].id
        while time.perf_counter() < deadline and counts[index] < limit:
            transfer = Transfer(f"{run}-{index}-{counts[index]}", debit, "payins:h1", 100, 9)
            result = await ledger.transfer(transfer)
            assert result is TransferResult.CREATED, result
            counts[index] += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    return Row(backend, "ledger transfers (group commit)", concurrency, sum(counts), elapsed)


async def load_cycles_per_s(ledger: Ledger, backend: str, concurrency: int, seconds: float) -> Row:
    """Full ED load cycles through the business events, as a load handler runs them: MAC1 balance
    check (with proof of what is open), into doubt, then confirmed by TAC."""
    run = secrets.token_hex(3)
    await ledger.open_accounts(ev.centre_accounts() + ev.unit_accounts(run))
    for index in range(concurrency):
        holder, card = f"{run}h{index}", f"{run}k{index}"
        await ledger.open_accounts(ev.cardholder_accounts(holder) + ev.card_accounts(card))
        await ev.post_contribution(ledger, ev.ContributionLine(run, "b", holder, 10**9, 0))
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency
    limit = TRANSFERS_MAX // concurrency

    async def caller(index: int) -> None:
        holder, card = f"{run}h{index}", f"{run}k{index}"
        while time.perf_counter() < deadline and counts[index] < limit:
            counter, random = counts[index], f"{counts[index]:08x}"
            await ev.check_chip_balance(ledger, card, ev.Purse.ED, 100 * counter, counter, random)
            attempt = ev.load(f"{run}|{index}|{counter}", random, card, ev.Purse.ED, counter,
                              100, holder)  # fmt: skip
            assert (await ev.post_into_doubt(ledger, attempt)).outcome is ev.Outcome.POSTED
            assert (await ev.resolve_attempt(ledger, attempt, happened=True)).ok
            counts[index] += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    return Row(backend, "ED load cycles (events)", concurrency, sum(counts), elapsed)


async def bench_sqlite(seconds: float) -> list[Row]:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as name:
        directory = Path(name)
        rows = [raw_sqlite_commits(directory, seconds)]
        ledger = SqliteLedger.open(directory / "ledger.db")
        try:
            for concurrency in CONCURRENCY:
                rows.append(await transfers_per_s(ledger, "sqlite", concurrency, seconds))
            for concurrency in LOAD_CONCURRENCY:
                rows.append(await load_cycles_per_s(ledger, "sqlite", concurrency, seconds))
        finally:
            await ledger.close()
        return rows


async def bench_postgres(dsn: str, seconds: float) -> list[Row]:
    import asyncpg

    from ledger.pg_ledger import PgLedger

    schema = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        rows = [await raw_pg_commits(dsn, schema, seconds, c) for c in (1, 8)]
        ledger = await PgLedger.open(dsn, schema=schema)
        try:
            for concurrency in CONCURRENCY:
                rows.append(await transfers_per_s(ledger, "postgres", concurrency, seconds))
            for concurrency in LOAD_CONCURRENCY:
                rows.append(await load_cycles_per_s(ledger, "postgres", concurrency, seconds))
        finally:
            await ledger.close()
        return rows
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def report(rows: list[Row]) -> str:
    lines = [f"{'backend':<9} {'what':<32} {'c':>3} {'count':>8} {'per s':>9}"]
    for row in rows:
        lines.append(
            f"{row.backend:<9} {row.what:<32} {row.concurrency:>3} {row.count:>8} "
            f"{row.per_s:>9,.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--dsn", default=DSN)
    args = parser.parse_args()
    backends = args.backend or ["sqlite", "postgres"]
    runs: dict[str, Callable[[], Coroutine[Any, Any, list[Row]]]] = {
        "sqlite": lambda: bench_sqlite(args.seconds),
        "postgres": lambda: bench_postgres(args.dsn, args.seconds),
    }
    rows: list[Row] = []
    for backend in backends:
        rows += asyncio.run(runs[backend]())
    print(f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cpus, {args.seconds:g} s each")
    print(report(rows))


if __name__ == "__main__":
    main()

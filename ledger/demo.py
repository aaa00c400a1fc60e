"""A demo deployment on embedded SQLite: institutions of each kind and level, terminals with
PSAMs, N cardholders with cards, every account the events need, and funded personal accounts —
contributions posted through the ledger and settled by a bank statement, exactly as a real file
would be. Deterministic for a seed. Keys are not made here (they come from the HSM): names and
ID numbers are sealed under the caller's `PersonalKeys` (ledger/personal.py).

>>> luhn_digit("621234000000001")
'9'
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine

from ledger import events as ev
from ledger import schema
from ledger.core import Account, Ledger, Transfer
from ledger.migrate import upgrade_postgres, upgrade_sqlite
from ledger.personal import Person, PersonalKeys
from ledger.pg_bridge import PgBridge, server_settings, split_url
from ledger.pg_engine import PgEngine
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger

CARD_BIN = "621234"
CHUNK = 2_000  # cardholders per transaction
PERIOD = "2026-01"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
Progress = Callable[[int], None]


@dataclass(frozen=True)
class DemoSummary:
    institutions: int
    terminals: int
    cardholders: int
    accounts: int
    personal_fen: int
    pooled_fen: int


def luhn_digit(digits: str) -> str:
    """The Luhn check digit to append to `digits`."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def institutions() -> list[dict[str, Any]]:
    """The centre, two banks, employer units, hospitals of levels 1..3 and pharmacies."""
    rows: list[dict[str, Any]] = [
        {"id": "centre", "kind": "centre", "name": "市医疗保险中心"},
        {
            "id": "b1",
            "kind": "bank",
            "name": "工商银行市分行",
            "settlement_account_no": "9558800001",
        },
        {
            "id": "b2",
            "kind": "bank",
            "name": "建设银行市分行",
            "settlement_account_no": "6227000002",
        },
    ]
    rows += [{"id": f"u{i}", "kind": "employer_unit", "name": f"参保单位{i}"} for i in range(1, 21)]
    for i in range(1, 7):
        rows.append({"id": f"h{i}", "kind": "hospital", "name": f"第{i}医院", "level": 1 + i % 3})
    rows += [
        {"id": f"p{i}", "kind": "pharmacy", "name": f"定点药店{i}", "level": 1} for i in range(1, 5)
    ]
    for index, row in enumerate(rows):
        if row["kind"] in ("hospital", "pharmacy", "employer_unit"):
            row["settlement_bank_id"] = "b1" if index % 2 else "b2"
            row["settlement_account_no"] = f"62{index:010d}"
    # One executemany takes its columns from the first row: give every row every column, or
    # the levels (which the medical policy needs) are silently dropped.
    columns = ("level", "settlement_bank_id", "settlement_account_no")
    return [{column: None for column in columns} | row for row in rows]


def terminals_and_psams(medical: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two POS with a PSAM each per medical institution, five kiosks and a counter per bank."""
    terminals: list[dict[str, Any]] = []
    psams: list[dict[str, Any]] = []
    for index, institution in enumerate(medical):
        for pos in range(2):
            number = index * 2 + pos + 1
            terminal = f"P{number:07d}"
            terminals.append({"id": terminal, "institution_id": institution, "kind": "pos"})
            psams.append(
                {
                    "serial": f"1000{number:012d}",
                    "psam_terminal_no": f"{number:012d}",
                    "institution_id": institution,
                    "terminal_id": terminal,
                }
            )
    terminals += [
        {"id": f"K{i:07d}", "institution_id": "centre", "kind": "kiosk"} for i in range(5)
    ]
    terminals += [
        {"id": f"B{b[1:]:0>7}", "institution_id": b, "kind": "bank_counter"} for b in ("b1", "b2")
    ]
    return terminals, psams


def cardholder_rows(
    start: int, count: int, rng: random.Random
) -> Iterator[tuple[dict[str, Any], dict[str, Any], ev.ContributionLine]]:
    """(cardholder, card, contribution) for cardholders start .. start+count-1."""
    for number in range(start, start + count):
        holder = f"{number:010d}"
        born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 55))
        unit = f"u{1 + number % 20}"
        pan_body = f"{CARD_BIN}{number:09d}"
        personal = rng.randrange(20_000, 500_000)
        yield (
            {
                "id": holder,
                "ssn": f"3101{born:%Y%m%d}{number % 10**6:06d}",
                "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                "category": "retired" if born.year < 1966 else "employed",
                "birth_date": born,
                "unit_id": unit,
            },
            {
                "card_no": pan_body + luhn_digit(pan_body),
                "application_serial": f"3100{number:012d}",
                "cardholder_id": holder,
                "expiry": dt.date(2031, 12, 31),
            },
            ev.ContributionLine(unit, PERIOD, holder, personal, personal * 2),
        )


async def sealed_in_place(holders: list[dict[str, Any]], personal: PersonalKeys) -> None:
    """Replace each cardholder row's clear ID number and name by their sealed columns."""
    people = [(h["id"], Person(h.pop("ssn"), h.pop("name"))) for h in holders]
    for holder, sealed in zip(holders, await personal.seal_all(people), strict=True):
        holder.update(sealed.columns())


def write_reference_data(engine: Engine | PgEngine) -> tuple[int, int, list[str]]:
    """Institutions, terminals and PSAMs; returns their counts and the medical institutions."""
    rows = institutions()
    medical = [r["id"] for r in rows if r["kind"] in ("hospital", "pharmacy")]
    terminals, psams = terminals_and_psams(medical)
    with engine.begin() as connection:
        for table, data in ((schema.institutions, rows), (schema.terminals, terminals),
                            (schema.psams, psams)):  # fmt: skip
            connection.execute(insert(table), data)
    return len(rows), len(terminals), medical


People = list[tuple[dict[str, Any], dict[str, Any]]]  # (cardholder, card) rows


def write_people(engine: Engine | PgEngine, chunk: People) -> None:
    with engine.begin() as connection:
        connection.execute(insert(schema.cardholders), [holder for holder, _ in chunk])
        connection.execute(insert(schema.cards), [card for _, card in chunk])


async def open_and_fund(ledger: Ledger, accounts: list[Account], transfers: list[Transfer]) -> None:
    await ledger.open_accounts(accounts)
    results = await ledger.post(transfers)
    refused = [r for r in results if not r.ok]
    if refused:
        raise RuntimeError(f"demo funding refused: {refused[:3]}")


def init_demo(
    target: Path | str,
    cardholders: int,
    *,
    personal: PersonalKeys,
    seed: int = 1,
    progress: Progress | None = None,
) -> DemoSummary:
    """Create the demo database at `target`: a SQLite file (which must not exist yet) or a
    ``postgresql://...`` URL (``?schema=NAME`` optional) whose schema has no institutions yet.
    Names and ID numbers are sealed under ``personal`` (its HSM must not be bound to another
    event loop: this runs its own)."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        return asyncio.run(_init_postgres(target, cardholders, seed, progress, personal))
    path = Path(str(target).removeprefix("sqlite:///"))
    if path.exists():
        raise FileExistsError(path)
    upgrade_sqlite(path)
    engine = create_engine(f"sqlite:///{path}")

    async def fund() -> DemoSummary:
        ledger = SqliteLedger.open(path, migrate=False)
        try:
            return await _fund(ledger, engine, cardholders, seed, progress, personal)
        finally:
            await ledger.close()

    try:
        return asyncio.run(fund())
    finally:
        engine.dispose()


async def _init_postgres(
    url: str, cardholders: int, seed: int, progress: Progress | None, personal: PersonalKeys
) -> DemoSummary:
    dsn, schema_name = split_url(url)
    connection = await asyncpg.connect(dsn, server_settings=server_settings(schema_name))
    try:
        await upgrade_postgres(connection)
        if await connection.fetchval("SELECT count(*) FROM institutions"):
            raise FileExistsError(f"{dsn.split('@')[-1]} already holds a deployment")
    finally:
        await connection.close()
    bridge = await asyncio.to_thread(PgBridge, url)
    ledger = await PgLedger.open(dsn, schema=schema_name, migrate=False)
    try:
        return await _fund(ledger, PgEngine(bridge), cardholders, seed, progress, personal)
    finally:
        await ledger.close()
        await asyncio.to_thread(bridge.close)


async def _fund(
    ledger: Ledger, engine: Engine | PgEngine, cardholders: int, seed: int,
    progress: Progress | None, keys: PersonalKeys,
) -> DemoSummary:  # fmt: skip
    rng = random.Random(seed)
    institution_count, terminal_count, medical = await asyncio.to_thread(
        write_reference_data, engine
    )
    accounts = ev.centre_accounts() + ev.bank_accounts("b1") + ev.bank_accounts("b2")
    accounts += [a for u in range(1, 21) for a in ev.unit_accounts(f"u{u}")]
    accounts += [a for i in medical for a in ev.institution_accounts(i)]
    await ledger.open_accounts(accounts)
    opened, personal, pooled = len(accounts), 0, 0
    for start in range(1, cardholders + 1, CHUNK):
        count = min(CHUNK, cardholders + 1 - start)
        rows = list(cardholder_rows(start, count, rng))
        await sealed_in_place([h for h, _, _ in rows], keys)
        await asyncio.to_thread(write_people, engine, [(h, c) for h, c, _ in rows])
        chunk_accounts = [a for h, c, _ in rows for a in ev.cardholder_accounts(h["id"])]
        chunk_accounts += [a for _, c, _ in rows for a in ev.card_accounts(c["application_serial"])]
        transfers = [t for _, _, line in rows for t in ev.contribution_transfers(line)]
        await open_and_fund(ledger, chunk_accounts, transfers)
        opened += len(chunk_accounts)
        personal += sum(line.personal_fen for _, _, line in rows)
        pooled += sum(line.pooled_fen for _, _, line in rows)
        if progress is not None:
            progress(count)
    await _settle_units(ledger)
    return DemoSummary(institution_count, terminal_count, cardholders, opened, personal, pooled)


async def _settle_units(ledger: Ledger) -> None:
    """The bank statement: each unit's contributions received in full."""
    units = [f"u{u}" for u in range(1, 21)]
    balances = await ledger.balances([f"contrib:{u}" for u in units])
    for line_no, unit in enumerate(units, start=1):
        owed = balances[f"contrib:{unit}"].balance_fen if f"contrib:{unit}" in balances else 0
        if owed > 0:
            line = ev.StatementLine(f"demo-{PERIOD}", line_no, unit, owed)
            await ev.post_contribution_received(ledger, line)

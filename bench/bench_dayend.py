"""Day-end over a business date of many posted transactions: the clearing (one grouped scan of
the date's transfers, pooled shares by category and class from the bills' splits), the payout
plan, the clearing report and the MACed payout files — ``ledger.dayend.run.run`` as
``medswitch dayend run`` calls it — then the same run again (identical bytes, nothing stored).

    python -m bench.bench_dayend [--transactions 1000000] [--cards 20000] [--bill-share 0.2]

The database is generated straight into SQLite (a migrated schema, the demo's institutions,
transfers and the accounts' posted totals that match them, one medical bill with its split per
pooled-share transfer); 5 % of the transfers are posted the day before, outside the window.
Baseline, same run: one bare scan of the window (COUNT and SUM over the transfers), the floor any
clearing pays for reading the day.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sqlite3
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from hsm.des import kcv
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import TEST_ONLY_COMPONENTS, Component, Lmk, combine
from hsm.soft import SoftHsm
from ledger.dayend import run as dayend
from ledger.dayend.calendar import Cutover
from ledger.demo import institutions
from ledger.events.common import TransferCode as C
from ledger.medical.sql_store import sqlite_engine
from ledger.migrate import upgrade_sqlite

DATE = dt.date(2026, 11, 24)
CUTOVER = Cutover.parse("23:00", "Asia/Shanghai")
SPLIT = {"category": "employed", "special_category": None, "lines": [
    {"coverage": "甲", "parts": [{"share": "pooled", "amount_fen": 0}]},
    {"coverage": "乙", "parts": [{"share": "pooled", "amount_fen": 0},
                                 {"share": "self_pay", "amount_fen": 100}]}]}


def _split(pooled: int) -> str:
    a = pooled * 3 // 4
    split = json.loads(json.dumps(SPLIT))
    split["lines"][0]["parts"][0]["amount_fen"] = a
    split["lines"][1]["parts"][0]["amount_fen"] = pooled - a
    return json.dumps(split)


def generate(db: Path, transactions: int, cards: int, bill_share: float) -> dict[str, int]:
    """The database: reference data, transfers, matching account totals, bills. Returns counts."""
    upgrade_sqlite(db)
    rng = random.Random(7)
    start, end = CUTOVER.window(DATE)
    early = CUTOVER.window(DATE - dt.timedelta(days=1))[0]
    rows = institutions()
    medical = [r["id"] for r in rows if r["kind"] in ("hospital", "pharmacy")]
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # account → [debits, credits]
    transfers, bills = [], []
    n = 0
    while len(transfers) < transactions:
        n += 1
        posted = rng.randrange(early, start) if n % 20 == 0 else rng.randrange(start, end)
        card = f"31{rng.randrange(cards):014d}"
        institution = medical[n % len(medical)]
        roll = rng.random()
        amount = rng.randrange(100, 50_000)
        moves = []
        if roll < bill_share:
            bill = f"B{n:011d}"
            moves.append(("pool:centre", f"payins:{institution}", C.BILL_POOLED_SHARE,
                          f"bill|{bill}"))
            bills.append((bill, institution, bill, "6212340000000019", "0000000001", 2026,
                          DATE.isoformat(), "0" * 64, "{}", _split(amount), "completed", posted,
                          posted, posted))
        elif roll < bill_share + 0.1:
            moves.append((f"ep:{card}", f"payep:{institution}", C.CARD_DEBIT, "ep"))
        elif roll < bill_share + 0.2:  # an ED load, proven by its TAC (one in 100 left in doubt)
            moves.append((f"pf:{card[-10:]}", f"edload:{card}", C.LOAD_INTO_DOUBT, f"load|{n}"))
            if n % 100:
                moves.append((f"edload:{card}", "edproof:centre", C.LOAD_PROVEN, f"load|{n}"))
                moves.append(("edproof:centre", f"ed:{card}", C.LOAD_TO_SHADOW, f"load|{n}"))
        else:
            moves.append((f"ed:{card}", f"payins:{institution}", C.CARD_DEBIT, "ed"))
        for debit, credit, code, ref in moves:
            transfers.append((f"{len(transfers):032x}", debit, credit, amount, int(code), ref, 0,
                              posted))
            totals[debit][0] += amount
            totals[credit][1] += amount
    accounts = [(a, a.split(":")[0], a.split(":")[1], 0, d, c) for a, (d, c) in totals.items()]
    accounts += [(f"{k}:centre", k, "centre", 0, 0, 0) for k in ("payoutins", "payoutep")]
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA synchronous=OFF")
        columns = ("id", "kind", "name", "level", "settlement_bank_id", "settlement_account_no")
        c.executemany(f"INSERT INTO institutions ({', '.join(columns)}) VALUES (?, ?, ?, ?, ?, ?)",
                      [tuple(r.get(k) for k in columns) for r in rows])
        c.executemany("INSERT INTO accounts (id, kind, owner, flags, debits_posted, "
                      "credits_posted, closed) VALUES (?, ?, ?, ?, ?, ?, 0)", accounts)
        c.executemany("INSERT INTO transfers (id, debit_account_id, credit_account_id, "
                      "amount_fen, code, reference, result, posted_at_us) VALUES "
                      "(?, ?, ?, ?, ?, ?, ?, ?)", transfers)
        c.executemany("INSERT INTO medical_bills (bill_id, institution_id, his_bill_no, card_no, "
                      "person_id, year, service_date, request_digest, bill_json, split_json, "
                      "state, created_at_us, expires_at_us, updated_at_us) VALUES "
                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", bills)
    return {"transfers": len(transfers), "bills": len(bills), "accounts": len(accounts)}


async def _keys() -> tuple[SoftHsm, dict[str, KeyRef]]:
    components = [Component.parse(text) for text in TEST_ONLY_COMPONENTS]
    hsm = SoftHsm(Lmk(components, kcv(combine(components, minimum=2))), MemoryKeyStore())
    now = dt.datetime(2026, 11, 25)
    keys = {b: await hsm.form_key(f"bank/{b}/FILE", KeyUsage.FILE,
                                  [Component(bytes.fromhex("0123456789ABCDEFFEDCBA98765432" + b[1]
                                                           .rjust(2, "0")))], now=now)
            for b in ("b1", "b2")}
    return hsm, keys


def baseline(db: Path) -> float:
    start, end = CUTOVER.window(DATE)
    at = time.perf_counter()
    with sqlite3.connect(db) as c:
        c.execute("SELECT COUNT(*), SUM(amount_fen) FROM transfers WHERE result = 0 AND "
                  "posted_at_us >= ? AND posted_at_us < ?", (start, end)).fetchone()
    return time.perf_counter() - at


async def timed_run(db: Path, out: Path) -> tuple[float, dayend.RunResult]:
    hsm, keys = await _keys()

    async def key_for(bank: str) -> KeyRef:
        return keys[bank]

    engine = sqlite_engine(db)
    now_us = CUTOVER.instant_us(DATE) + 3_600_000_000
    at = time.perf_counter()
    try:
        result = await dayend.run(engine, hsm, key_for, DATE.isoformat(), CUTOVER, out, "bench",
                                  now_us)
    finally:
        engine.dispose()
    return time.perf_counter() - at, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--cards", type=int, default=20_000)
    parser.add_argument("--bill-share", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "dayend.db"
        at = time.perf_counter()
        counts = generate(db, args.transactions, args.cards, args.bill_share)
        print(f"generated {counts} in {time.perf_counter() - at:.1f} s")
        scan = baseline(db)
        took, result = asyncio.run(timed_run(db, Path(tmp) / "out"))
        again, second = asyncio.run(timed_run(db, Path(tmp) / "out"))
        start, end = CUTOVER.window(DATE)
        with sqlite3.connect(db) as c:
            cleared = c.execute("SELECT COUNT(*) FROM transfers WHERE posted_at_us >= ? AND "
                                "posted_at_us < ?", (start, end)).fetchone()[0]
        print(f"baseline  bare scan of the window: {scan:6.2f} s")
        print(f"day-end   {cleared} transactions cleared, {len(result.plan.payouts)} payouts in "
              f"{len(result.files)} files: {took:6.2f} s ({cleared / took:,.0f} per s; goal <= "
              f"60 s) {result.timings_s}")
        print(f"rerun     {second.status}: {again:6.2f} s {second.timings_s}")


if __name__ == "__main__":
    main()

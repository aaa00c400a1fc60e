"""Sign-on cost as sign-ons pile up (issue 22, finding 3): one terminal signs on N times
without ever proving the keys (a flood of forged sign-ons), through the software HSM over the
embedded database's session-key store, as the daemon does (switch.session_store). Prints the
mean cost of each block of sign-ons and the rows the store holds: flat and bounded.

    python -m bench.bench_sign_on [--sign-ons 2000] [--block 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hsm.des import kcv
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from ledger.migrate import upgrade_sqlite
from switch.pg_stores import RoutedKeyStore
from switch.session_store import SqliteSessionKeys
from switch.sessions import Sessions, SignOnLimit

TERMINAL = "POS00001"


def _database(path: Path) -> None:
    upgrade_sqlite(path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode = WAL")  # as the daemon's ledger sets it
        db.execute(
            "INSERT INTO institutions (id, kind, name, level) VALUES ('H1', 'hospital', 'B', 3)"
        )
        db.execute(
            "INSERT INTO terminals (id, institution_id, kind) VALUES (?, 'H1', 'pos')", (TERMINAL,)
        )


async def run(sign_ons: int, block: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "medswitch.db"
        _database(path)
        store, files = SqliteSessionKeys(path), MemoryKeyStore()
        parts = [Component(secrets.token_bytes(16)) for _ in range(2)]
        hsm = SoftHsm(Lmk(parts, kcv(combine(parts))), RoutedKeyStore(store, files))
        sessions = Sessions(files, store, SignOnLimit(per_minute=sign_ons, pending_max=6))
        now = datetime.now(UTC)
        tmk = await hsm.generate_key(f"tmk/{TERMINAL}", KeyUsage.TMK, now=now)
        for first in range(0, sign_ons, block):
            started = time.perf_counter()
            for _ in range(min(block, sign_ons - first)):
                sessions.admit(TERMINAL, now)
                keys = await hsm.sign_on(tmk, 60, f"term/{TERMINAL}", now=now)
                await sessions.offer(TERMINAL, keys)
            took_ms = (time.perf_counter() - started) * 1000 / block
            with contextlib.closing(sqlite3.connect(path)) as db:
                sets = db.execute("SELECT count(*) FROM session_sets").fetchone()[0]
                blocks = db.execute("SELECT count(*) FROM session_keys").fetchone()[0]
            print(
                f"sign-ons {first + 1:>5}-{first + block:<5} {took_ms:6.2f} ms each;"
                f" store: {sets} sets, {blocks} key blocks"
            )
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sign-ons", type=int, default=2000)
    parser.add_argument("--block", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.sign_ons, args.block))


if __name__ == "__main__":
    main()

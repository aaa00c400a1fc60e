"""A writer process for the crash test: posts a bounded stream of transfers from several
concurrent tasks and prints each id once its post is acknowledged (durable)."""

from __future__ import annotations

import asyncio
import sys

from ledger.core import Ledger, Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger

TASKS = 8
PER_TASK_MAX = 5_000


async def open_ledger(args: list[str]) -> Ledger:
    """`sqlite PATH` or `postgres DSN SCHEMA`."""
    if args[0] == "sqlite":
        return SqliteLedger.open(args[1])
    return await PgLedger.open(args[1], schema=args[2])


async def main(args: list[str]) -> None:
    ledger = await open_ledger(args)
    await ledger.open_accounts(
        [new_account(K.CARD_ED_SHADOW, "k1"), new_account(K.INSTITUTION_PAYABLE_INSURANCE, "h1")]
    )
    print("ready", flush=True)

    async def stream(task: int) -> None:
        for i in range(PER_TASK_MAX):
            transfer = Transfer(f"d-{task}-{i}", "ed:k1", "payins:h1", 1 + i % 97, code=9)
            result = await ledger.transfer(transfer)
            if result is TransferResult.CREATED:
                sys.stdout.write(f"{transfer.id} {transfer.amount_fen}\n")
                sys.stdout.flush()

    await asyncio.gather(*(stream(t) for t in range(TASKS)))
    await ledger.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

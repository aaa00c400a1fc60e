"""A daemon worker's medical service on PostgreSQL with its async transitions in its ledger's
batches, and the advice's way through it (a card debit and the bill's completion in one commit):
what the PostgreSQL in-ledger tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ledger import events as ev
from ledger.core import Account, Transfer, TransferResult
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.medical.bills import BillRecord, Submission
from ledger.medical.pg_batch import LedgerTransition
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import Bill, BillLine
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore
from ledger.pg_bridge import server_settings, split_url
from ledger.pg_engine import PgEngine
from ledger.pg_ledger import PgLedger
from tests.support.medical_world import HOLDERS, NOW

CARD = HOLDERS[0].card_no
DEBITS = count(1)
PAYABLE = account_id(K.INSTITUTION_PAYABLE_INSURANCE, "H001")


@asynccontextmanager
async def worker(
    engine: PgEngine, url: str, *, in_ledger: bool = True
) -> AsyncIterator[tuple[MedicalService, PgLedger]]:
    """A daemon worker: its async transitions in its ledger's batches (``in_ledger``) or on a
    pool of this loop."""
    dsn, schema = split_url(url)
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=2, server_settings=server_settings(schema)
    )
    ledger = await PgLedger.open(dsn, schema=schema, migrate=False)
    await ledger.open_accounts(ev.centre_accounts())  # the pooled fund
    store = SqlMedicalStore(engine, pool=pool, pg_ledger=ledger if in_ledger else None)
    try:
        yield MedicalService(store, SqlDirectory(engine)), ledger  # type: ignore[arg-type]
    finally:
        store.close()
        await ledger.close()
        await pool.close()


async def submitted(service: MedicalService, number: str, card: str = CARD) -> BillRecord:
    bill = Bill((BillLine("A01", 10, 1000),))
    submission = Submission(number, card, NOW.date(), bill)
    record, _ = await asyncio.to_thread(service.submit_bill, "H001", submission, NOW)
    return record


def _accounts(_: Transfer) -> list[Account]:
    return ev.card_accounts("C1") + ev.institution_accounts("H001")


def _postings(found: tuple[BillRecord, bool]) -> tuple[list[Transfer], Any]:
    completion = ev.BillCompletion(found[0].bill_id, "H001", found[0].split.pooled_fen)
    return ev.bill_completion_transfers(completion), _accounts


async def in_ledger(
    service: MedicalService, ledger: PgLedger, bill_id: str, amount: int
) -> tuple[BillRecord, bool]:
    """The advice's way: a fresh card debit of ``amount`` and the bill's completion in one
    commit; the completion's answer as the pool's is (the debit is always posted)."""
    shadow = account_id(K.CARD_ED_SHADOW, "C1")
    debit = Transfer(f"debit-{next(DEBITS)}", shadow, PAYABLE, amount, 1)
    write = service.paid_completion_write(bill_id, amount, NOW)
    assert isinstance(write, LedgerTransition)  # PostgreSQL's, not SQLite's
    likely = ev.bill_completion_transfers(ev.BillCompletion(bill_id, "H001", 1))
    (results, _), called = await ledger.post_and_call(
        [debit], [], _accounts, write, _postings, likely
    )
    assert results == [TransferResult.CREATED]
    assert called is not None
    if isinstance(called, KeyError):
        raise MedicalError("not_found", "no such bill")
    if isinstance(called, BaseException):
        raise called
    found, posted = called
    assert all(r.ok for r in posted)
    return found  # type: ignore[no-any-return]

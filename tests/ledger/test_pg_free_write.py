"""A PostgreSQL group commit of postings runs with no transaction open (``ledger.pg_write``):
its read locks nothing and its write, one statement and its own transaction, checks what the
batch decided on. An account the batch decided on that moves between its read and its write
makes the write fail and the batch run again from a fresh read — a never-negative account is
never overdrawn, a refusal is never remembered on totals that no longer hold — and the write
is where the batch's transaction starts (nothing waits on the daemon with a row locked)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from unittest import mock

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger import events as ev
from ledger.core import (
    AccountFlags,
    Health,
    LedgerUnavailable,
    OfflineRecord,
    Transfer,
    TransferResult,
    new_account,
)
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from ledger.pg_batch_sql import WRITE_FREE
from ledger.pg_connection import KeptAlive
from ledger.pg_ledger import PgLedger
from tests.support.pg import DSN, fresh_schema, until_waiting

pytestmark = pytest.mark.postgres

FUND = account_id(K.PERSONAL_FUND, "P1")  # never negative
RECEIVABLE = account_id(K.CONTRIBUTIONS_RECEIVABLE, "U1")
IN_DOUBT = account_id(K.ED_LOADS_IN_DOUBT, "C1")
_WRITER = (  # the statement of the ledger's writer that waits for a lock
    "SELECT left(query, 20) FROM pg_stat_activity"
    " WHERE application_name = 'medswitch-ledger' AND wait_event_type = 'Lock'"
)


_TRANSACTION = asyncpg.Connection.transaction


async def _funded(ledger: PgLedger, fen: int) -> None:
    accounts = ev.cardholder_accounts("P1") + ev.card_accounts("C1") + ev.unit_accounts("U1")
    await ledger.open_accounts(accounts)
    assert await ledger.post([Transfer("in", RECEIVABLE, FUND, fen, 1)]) == [TransferResult.CREATED]


async def _meanwhile(
    fen: int,
    load: Transfer,
    change: Callable[[asyncpg.Connection], Awaitable[None]],
    records: Sequence[OfflineRecord] = (),
) -> tuple[list[TransferResult], int, int, str, int]:
    """``load`` posted (with ``records``) on a fund of ``fen`` while another transaction holds
    the fund's row and, once the batch's write waits for it, makes ``change``: the load's
    result, the fund's totals after, the waiting statement, and how many transactions the
    writer opened meanwhile."""
    async with fresh_schema() as schema:
        ledger = await PgLedger.open(DSN, schema=schema)
        other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            await _funded(ledger, fen)
            holding = other.transaction()
            await holding.start()
            await other.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", FUND)
            opened = mock.Mock(side_effect=_TRANSACTION)
            with mock.patch.object(KeptAlive, "transaction", lambda *a, **k: opened(*a, **k)):
                posting = asyncio.create_task(ledger.post_and_record([load], records))
                await until_waiting(other)
                waiting = await other.fetchval(_WRITER)
                await change(other)
                await holding.commit()
                result, _ = await posting
            found = (await ledger.balances([FUND]))[FUND]
            totals = found.debits_posted_fen, found.credits_posted_fen
            return result, *totals, waiting, opened.call_count
        finally:
            await other.close()
            await ledger.close()


def test_a_fund_debited_between_the_read_and_the_write_is_read_again() -> None:
    """The batch read 100 and decided to debit 80; another debit of 50 commits before its
    write: the write does not apply, the batch runs again and refuses (never negative)."""

    async def debit_50(other: asyncpg.Connection) -> None:
        await other.execute(
            "UPDATE accounts SET debits_posted = debits_posted + 50 WHERE id = $1", FUND
        )

    load = Transfer("load-80", FUND, IN_DOUBT, 80, 1)
    result, debits, credits, waiting, transactions = asyncio.run(_meanwhile(100, load, debit_50))
    assert result == [TransferResult.INSUFFICIENT_FUNDS]
    assert (debits, credits) == (50, 100)
    assert waiting == WRITE_FREE[:20]  # the write waits, not the read
    assert transactions == 1  # the run again: in a transaction, its read locking the fund


def test_a_refusal_is_not_remembered_on_totals_that_changed() -> None:
    """The batch read 100 and decided to refuse a load of 150; a credit of 100 commits before
    its write (which would remember the refusal under the load's id): the batch runs again and
    posts the load."""

    async def credit_100(other: asyncpg.Connection) -> None:
        await other.execute(
            "UPDATE accounts SET credits_posted = credits_posted + 100 WHERE id = $1", FUND
        )

    load = Transfer("load-150", FUND, IN_DOUBT, 150, 1)
    result, debits, credits, _, transactions = asyncio.run(_meanwhile(100, load, credit_100))
    assert result == [TransferResult.CREATED]
    assert (debits, credits) == (150, 200)
    assert transactions == 1


def test_a_fund_closed_between_the_read_and_the_write_is_not_debited() -> None:
    """Closing an account leaves its totals as they were: the write checks it is still open."""

    async def close(other: asyncpg.Connection) -> None:
        await other.execute("UPDATE accounts SET closed = true WHERE id = $1", FUND)

    load = Transfer("load-80", FUND, IN_DOUBT, 80, 1)
    result, debits, credits, _, transactions = asyncio.run(_meanwhile(100, load, close))
    assert result == [TransferResult.DEBIT_ACCOUNT_CLOSED]
    assert (debits, credits) == (0, 100)
    assert transactions == 1


def test_an_offline_record_filed_between_the_read_and_the_write_is_read_again() -> None:
    """The batch read the record as not on file; another process files it before the write
    (its insert does nothing then): the write does not apply, the batch runs again in a
    transaction and finds the record on file — kept as filed, not written twice."""
    record = OfflineRecord(
        "000000000001", 7, "P0000001", 3, "3100000000000001", "ED", 80, "a1b2c3d4",
        "20261125101500", "load-80", 4,
    )  # fmt: skip

    async def filed(other: asyncpg.Connection) -> None:
        await other.execute(
            "INSERT INTO offline_records (psam_terminal_no, psam_serial, terminal_id, batch_no,"
            " application_serial, purse, amount_fen, tac, card_datetime, transfer_id,"
            " card_counter, received_at_us) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " $11, 1",
            *(getattr(record, f.name) for f in dataclasses.fields(record)),
        )

    load = Transfer("load-80", FUND, IN_DOUBT, 80, 1)
    result, debits, credits, _, transactions = asyncio.run(_meanwhile(100, load, filed, [record]))
    assert result == [TransferResult.CREATED]
    assert (debits, credits) == (80, 100)
    assert transactions == 1  # the write refused; run again in a transaction


def test_an_unchanged_fund_is_debited_once_with_no_transaction_open() -> None:
    async def nothing(other: asyncpg.Connection) -> None:
        return None

    load = Transfer("load-80", FUND, IN_DOUBT, 80, 1)
    result, debits, credits, _, transactions = asyncio.run(_meanwhile(100, load, nothing))
    assert result == [TransferResult.CREATED]
    assert (debits, credits) == (80, 100)
    assert transactions == 0  # the read, the write: each statement its own transaction


def test_writers_debiting_a_never_negative_pooled_fund_never_overdraw_it() -> None:
    """A shared account that is never negative is a hot row the batches decide on (they lock
    it, in a transaction): two writers' debits of it together never take it below zero."""
    pool = account_id(K.POOLED_FUND, "centre")
    payable = account_id(K.INSTITUTION_PAYABLE_INSURANCE, "H001")
    source = account_id(K.CONTRIBUTIONS_RECEIVABLE, "U1")

    async def main() -> None:
        async with fresh_schema() as schema:
            ledgers = [await PgLedger.open(DSN, schema=schema, writers=2) for _ in range(2)]
            try:
                flags = AccountFlags.NEVER_NEGATIVE
                accounts = [
                    new_account(K.POOLED_FUND, "centre", flags),
                    *ev.institution_accounts("H001"),
                    *ev.unit_accounts("U1"),
                ]
                await ledgers[0].open_accounts(accounts)
                funded = await ledgers[0].post([Transfer("fund", source, pool, 1000, 1)])
                assert funded == [TransferResult.CREATED]
                posts = [
                    ledgers[n % 2].post([Transfer(f"pay-{n}", pool, payable, 100, 1)])
                    for n in range(20)
                ]
                results = [r for found in await asyncio.gather(*posts) for r in found]
                assert results.count(TransferResult.CREATED) == 10
                assert results.count(TransferResult.INSUFFICIENT_FUNDS) == 10
                found = (await ledgers[1].balances([pool]))[pool]
                assert (found.debits_posted_fen, found.credits_posted_fen) == (1000, 1000)
            finally:
                for ledger in ledgers:
                    await ledger.close()

    asyncio.run(main())


def test_a_transfer_sent_to_two_writers_at_once_moves_the_shared_accounts_once() -> None:
    """The same transfer between two shared accounts (moved by delta, no totals checked) in
    two processes' batches at once, both decided new: the second write's transfer id is not
    new, so nothing of it is written, and its batch, run again, finds the transfer."""
    pool = account_id(K.POOLED_FUND, ev.CENTRE)
    payable = account_id(K.INSTITUTION_PAYABLE_INSURANCE, "H001")
    waiting = (  # backends waiting for $1, or for one that waits for it (the row's queue)
        "SELECT count(*) FROM pg_stat_activity AS a WHERE pg_blocking_pids(a.pid) && ARRAY[$1::int]"
        " OR EXISTS (SELECT 1 FROM pg_stat_activity AS b WHERE pg_blocking_pids(a.pid)"
        " && ARRAY[b.pid] AND pg_blocking_pids(b.pid) && ARRAY[$1::int])"
    )

    async def main() -> tuple[list[TransferResult], int, int]:
        async with fresh_schema() as schema:
            ledgers = [await PgLedger.open(DSN, schema=schema) for _ in range(2)]
            other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                await ledgers[0].open_accounts(
                    ev.centre_accounts() + ev.institution_accounts("H001")
                )
                holding = other.transaction()
                await holding.start()
                await other.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", pool)
                share = Transfer("share-1", payable, pool, 700, 1)
                posts = [asyncio.create_task(ledger.post([share])) for ledger in ledgers]
                for _ in range(400):  # both writes wait for the pool
                    assert not any(post.done() for post in posts)
                    if await other.fetchval(waiting, other.get_server_pid()) >= 2:
                        break
                    await asyncio.sleep(0.025)
                await holding.commit()
                results = [r for found in await asyncio.gather(*posts) for r in found]
                found = (await ledgers[1].balances([pool]))[pool]
                return (
                    sorted(results),
                    found.credits_posted_fen,
                    len(await ledgers[1].history(pool)),
                )
            finally:
                await other.close()
                for ledger in ledgers:
                    await ledger.close()

    results, credited, posted = asyncio.run(main())
    assert results == sorted([TransferResult.CREATED, TransferResult.EXISTS])
    assert (credited, posted) == (700, 1)


def test_a_read_failing_after_the_write_fails_alone() -> None:
    """A batch's reads run after its write, which with no transaction open has committed: a
    read failing then (an id PostgreSQL cannot hold) fails alone — the batch is not run again
    job by job, which would answer the posting sent once "exists", as if it were a replay."""

    async def main() -> tuple[object, object, int]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            try:
                await ledger.open_accounts(ev.cardholder_accounts("P1") + ev.unit_accounts("U1"))
                posted, looked_up = await asyncio.gather(
                    ledger.post([Transfer("in", RECEIVABLE, FUND, 5, 1)]),
                    ledger.lookup_transfers(["in\x00"]),
                    return_exceptions=True,
                )
                found = (await ledger.balances([FUND]))[FUND]
                return posted, looked_up, found.credits_posted_fen
            finally:
                await ledger.close()

    posted, looked_up, credited = asyncio.run(main())
    assert posted == [TransferResult.CREATED]
    assert isinstance(looked_up, asyncpg.CharacterNotInRepertoireError)
    assert credited == 5


def test_a_write_whose_connection_drops_is_unknown_and_safe_to_send_again() -> None:
    """The writer's connection lost while its no-transaction write waits (its outcome unknown
    to the writer): the posting fails LedgerUnavailable — never answered as posted, never run
    again by the ledger — and sent again it posts once."""

    async def main() -> tuple[list[TransferResult], int]:
        async with fresh_schema() as schema:
            ledger = await PgLedger.open(DSN, schema=schema)
            other = await asyncpg.connect(DSN, server_settings={"search_path": schema})
            try:
                await _funded(ledger, 100)
                holding = other.transaction()
                await holding.start()
                await other.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", FUND)
                load = Transfer("load-80", FUND, IN_DOUBT, 80, 1)
                posting = asyncio.create_task(ledger.post([load]))
                await until_waiting(other)
                killed = await other.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE pg_blocking_pids(pid) && ARRAY[$1::int]",
                    other.get_server_pid(),
                )
                assert killed == 1
                await holding.commit()
                with pytest.raises(LedgerUnavailable):
                    await posting
                for _ in range(100):  # the writer connects again (its backoff)
                    if ledger.health() is Health.OK:
                        break
                    await asyncio.sleep(0.1)
                again = await ledger.post([load])
                return again, (await ledger.balances([FUND]))[FUND].debits_posted_fen
            finally:
                await other.close()
                await ledger.close()

    assert asyncio.run(main()) == ([TransferResult.CREATED], 80)

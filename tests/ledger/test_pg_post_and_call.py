"""`PgLedger.post_and_call`: a debit, the write of another store its money allows (a bill's
completion) and the postings the write's value names, in one transaction and one commit —
the calls of a batch run together (one call of their runner), a refused call fails alone and
leaves its debit posted, a call failing in SQL fails its batch, which runs again job by job with
each call in a savepoint (its debit still posted), and postings naming accounts the job did not
announce are read on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.core import Account, Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.pg_ledger import PgLedger
from tests.support.pg import DSN, fresh_schema

pytestmark = pytest.mark.postgres

SOURCE = new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1")
TARGET = new_account(K.PERSONAL_FUND, "c1")
OTHER = new_account(K.PERSONAL_FUND, "c2")  # where a share goes that no job announced


@dataclass
class Counters:
    """A store writing a row of ``counters`` per call: its runner, and what it was given."""

    rounds: list[int] = field(default_factory=list)  # calls per run of the runner

    async def run(self, connection: asyncpg.Connection, calls: Sequence[Any]) -> list[Any]:
        self.rounds.append(len(calls))
        outcomes: list[Any] = []
        for call in calls:
            if call.refuse:  # decided before writing, as a bill's refusal is
                outcomes.append(LookupError(call.name))
                continue
            await connection.execute(
                "INSERT INTO counters (name, next_value) VALUES ($1, 1)", call.name
            )
            if call.sql_fails:
                await connection.execute("SELECT 1 / 0")
            outcomes.append(call.name)
        return outcomes


@dataclass(frozen=True)
class Count:
    name: str
    store: Counters
    refuse: bool = False
    sql_fails: bool = False

    @property
    def runner(self) -> Any:
        return self.store.run


def opening(_: Transfer) -> list[Account]:
    return [SOURCE, TARGET, OTHER]


def share(amount: int, to: Account = TARGET) -> Any:
    """The postings a call's value names: a share of ``amount`` to ``to``."""

    def name(value: str) -> tuple[list[Transfer], Any]:
        return [Transfer(f"share-{value}", SOURCE.id, to.id, amount, 1)], opening

    return name


def likely(value: str, amount: int) -> list[Transfer]:
    transfers: list[Transfer] = share(amount)(value)[0]
    return transfers


@asynccontextmanager
async def ledger_and_names() -> AsyncIterator[tuple[PgLedger, Callable[[], Awaitable[list[str]]]]]:
    """A ledger on a fresh schema, and what its ``counters`` hold (read on a connection of
    the test's own)."""
    async with fresh_schema() as schema:
        ledger = await PgLedger.open(DSN, schema=schema)
        reader = await asyncpg.connect(DSN, server_settings={"search_path": schema})

        async def names() -> list[str]:
            return [r[0] for r in await reader.fetch("SELECT name FROM counters ORDER BY name")]

        try:
            yield ledger, names
        finally:
            await reader.close()
            await ledger.close()


def test_a_debit_its_call_and_the_postings_named_commit_as_one() -> None:
    async def main() -> None:
        store = Counters()
        async with ledger_and_names() as (ledger, names):
            debit = Transfer("debit-1", SOURCE.id, TARGET.id, 7, 1)
            (results, before), outcome = await ledger.post_and_call(
                [debit], [], opening, Count("a", store), share(2), likely("a", 2)
            )
            assert results == [TransferResult.CREATED] and before == {}
            assert outcome == ("a", [TransferResult.CREATED])
            # The same debit again (an advice sent twice): in the ledger, so the call runs.
            (results, before), outcome = await ledger.post_and_call(
                [debit], [], opening, Count("b", store), share(2), likely("b", 2), str.upper
            )
            assert results == [TransferResult.EXISTS]
            assert before[TARGET.id] == 9  # credited 7 + 2, in fen by its normal side
            assert outcome == ("B", [TransferResult.CREATED])  # the value as brief gives it
            # A refused call: nothing of it written, the debit posted.
            fresh = Transfer("debit-2", SOURCE.id, TARGET.id, 1, 1)
            (results, _), outcome = await ledger.post_and_call(
                [fresh], [], opening, Count("c", store, refuse=True), share(2)
            )
            assert results == [TransferResult.CREATED] and isinstance(outcome, LookupError)
            # A debit the ledger refuses (its id taken by other data): no call at all.
            clash = Transfer("debit-1", SOURCE.id, TARGET.id, 8, 1)
            (results, _), outcome = await ledger.post_and_call(
                [clash], [], opening, Count("d", store), share(2)
            )
            assert results == [TransferResult.EXISTS_WITH_DIFFERENT_DATA] and outcome is None
            found = await ledger.balances([TARGET.id])
            assert found[TARGET.id].credits_posted_fen == 7 + 2 + 2 + 1
            assert await names() == ["a", "b"]

    asyncio.run(main())


def test_the_calls_of_a_batch_run_together_and_a_refusal_fails_alone() -> None:
    async def main() -> None:
        store = Counters()
        async with ledger_and_names() as (ledger, names):
            await ledger.open_accounts([SOURCE, TARGET, OTHER])
            jobs = [
                ledger.post_and_call(
                    [Transfer(f"debit-{n}", SOURCE.id, TARGET.id, 10, 1)],
                    [],
                    opening,
                    Count(f"n{n}", store, refuse=n == 3),
                    # one share goes where no job said: read (and locked) on the way
                    share(1, OTHER if n == 5 else TARGET),
                    likely(f"n{n}", 1),
                )
                for n in range(8)
            ]
            found = await asyncio.gather(*jobs)
            assert store.rounds == [8]  # one batch, one run of the runner
            for n, ((results, _), outcome) in enumerate(found):
                assert results == [TransferResult.CREATED]
                if n == 3:
                    assert isinstance(outcome, LookupError)
                else:
                    assert outcome == (f"n{n}", [TransferResult.CREATED])
            balances = await ledger.balances([TARGET.id, OTHER.id])
            assert balances[TARGET.id].credits_posted_fen == 8 * 10 + 6
            assert balances[OTHER.id].credits_posted_fen == 1
            assert await names() == [f"n{n}" for n in range(8) if n != 3]

    asyncio.run(main())


def test_a_call_failing_in_sql_leaves_its_debit_posted_and_the_others_done() -> None:
    async def main() -> None:
        store = Counters()
        async with ledger_and_names() as (ledger, names):
            await ledger.open_accounts([SOURCE, TARGET, OTHER])
            jobs = [
                ledger.post_and_call(
                    [Transfer(f"debit-{n}", SOURCE.id, TARGET.id, 10, 1)],
                    [],
                    opening,
                    Count(f"n{n}", store, sql_fails=n == 1),
                    share(1),
                    likely(f"n{n}", 1),
                )
                for n in range(3)
            ]
            found = await asyncio.gather(*jobs)
            # the batch failed once, then each job ran alone, its call in a savepoint
            assert store.rounds == [3, 1, 1, 1]
            for n, ((results, _), outcome) in enumerate(found):
                assert results == [TransferResult.CREATED]
                if n == 1:
                    assert isinstance(outcome, asyncpg.DivisionByZeroError)
                else:
                    assert outcome == (f"n{n}", [TransferResult.CREATED])
            balances = await ledger.balances([TARGET.id])
            assert balances[TARGET.id].credits_posted_fen == 3 * 10 + 2
            assert await names() == ["n0", "n2"]

    asyncio.run(main())


def test_calls_without_postings_share_the_batch_and_a_refusal_is_raised() -> None:
    """``PgLedger.call`` (a bill's approval): run with the batch's other calls, in its commit."""

    async def main() -> None:
        store = Counters()
        async with ledger_and_names() as (ledger, names):
            await ledger.open_accounts([SOURCE, TARGET, OTHER])
            debit = Transfer("debit-1", SOURCE.id, TARGET.id, 5, 1)
            found = await asyncio.gather(
                ledger.call(Count("x", store)),
                ledger.call(Count("y", store, refuse=True)),
                ledger.post_and_call([debit], [], opening, Count("z", store), share(1)),
                return_exceptions=True,
            )
            # one batch: the debit's call before the write (its share is posted by it), the
            # plain calls of the runner together after it (the people's locks last)
            assert store.rounds == [1, 2]
            assert found[0] == "x" and isinstance(found[1], LookupError)
            assert found[2][1] == ("z", [TransferResult.CREATED])
            assert await ledger.call(Count("w", store)) == "w"  # alone: no posting read
            assert await names() == ["w", "x", "z"]

    asyncio.run(main())

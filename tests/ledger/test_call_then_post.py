"""A medical write and the postings its outcome names, in one writer job (`CallThenPost`): both in
one transaction and one commit — the postings only when the write did not fail, the write
rolled back when the postings cannot be made — and the accounts they need opened on the way."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ledger.core import Account, Transfer, TransferResult, new_account
from ledger.kinds import AccountKind as K
from ledger.sqlite_ledger import SqliteLedger
from ledger.writer.jobs import CallThenPost

SOURCE = new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1")
TARGET = new_account(K.PERSONAL_FUND, "c1")


def write_counter(name: str, fail: bool = False) -> Any:
    def write(db: sqlite3.Connection) -> str:
        db.execute("INSERT INTO counters (name, next_value) VALUES (?, 1)", (name,))
        if fail:
            raise LookupError("after writing")
        return name

    return write


def postings(amount: int, opening: list[Account]) -> Any:
    def name(value: str) -> tuple[list[Transfer], Any]:
        transfer = Transfer(f"t-{value}", SOURCE.id, TARGET.id, amount, 1)
        return [transfer], lambda _: opening

    return name


def counters(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT name FROM counters ORDER BY name")]


def run(path: Path, scenario: Any) -> Any:
    async def main() -> Any:
        ledger = SqliteLedger.open(path)
        try:
            return await scenario(ledger)
        finally:
            await ledger.close()

    return asyncio.run(main())


def test_the_write_and_its_postings_commit_together(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario(ledger: SqliteLedger) -> None:
        # The accounts do not exist yet: the postings open them.
        value, results = await ledger.writer.submit(
            CallThenPost(write_counter("a"), postings(5, [SOURCE, TARGET]))
        )
        assert (value, results) == ("a", [TransferResult.CREATED])
        balance = (await ledger.balances([TARGET.id]))[TARGET.id]
        assert balance.credits_posted_fen == 5
        # The same transfer again (a replay): the write is new, the posting remembered.
        value, results = await ledger.writer.submit(
            CallThenPost(
                write_counter("b"),
                lambda _: ([Transfer("t-a", SOURCE.id, TARGET.id, 5, 1)], lambda _: []),
            )
        )
        assert (value, results) == ("b", [TransferResult.EXISTS])

    run(path, scenario)
    assert counters(path) == ["a", "b"]


def test_a_failed_write_posts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario(ledger: SqliteLedger) -> None:
        with pytest.raises(LookupError):
            await ledger.writer.submit(
                CallThenPost(write_counter("a", fail=True), postings(5, [SOURCE, TARGET]))
            )
        assert await ledger.balances([TARGET.id]) == {}  # not even the accounts

    run(path, scenario)
    assert counters(path) == []


def test_postings_that_cannot_be_made_roll_the_write_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    def broken(value: str) -> tuple[list[Transfer], Any]:
        raise ValueError(f"no postings for {value}")

    async def scenario(ledger: SqliteLedger) -> None:
        with pytest.raises(ValueError, match="no postings for a"):
            await ledger.writer.submit(CallThenPost(write_counter("a"), broken))
        value, _ = await ledger.writer.submit(
            CallThenPost(write_counter("b"), postings(3, [SOURCE, TARGET]))
        )
        assert value == "b"

    run(path, scenario)
    assert counters(path) == ["b"]


def test_a_post_then_the_call_its_money_allows(tmp_path: Path) -> None:
    """`post_and_call`: the debit posted first; the call and its postings only when the debit
    is in the ledger (now or before); a refused call leaves the debit posted. Its ``brief``
    gives what of a call's value comes back; a refusal or no call comes back as it is."""
    path = tmp_path / "ledger.db"
    debit = Transfer("debit-1", SOURCE.id, TARGET.id, 7, 1)

    def opening(_: Transfer) -> list[Account]:
        return [SOURCE, TARGET]

    async def scenario(ledger: SqliteLedger) -> None:
        (results, before), outcome = await ledger.post_and_call(
            [debit], [], opening, write_counter("a"), postings(2, [])
        )
        assert results == [TransferResult.CREATED] and before == {}
        assert outcome == ("a", [TransferResult.CREATED])
        # The same debit again (an advice sent twice): in the ledger before, so the call runs.
        (results, before), outcome = await ledger.post_and_call(
            [debit], [], opening, write_counter("b"), postings(2, []), brief=str.upper
        )
        assert results == [TransferResult.EXISTS] and before[TARGET.id] == 9  # 7 + 2, in fen
        assert outcome == ("B", [TransferResult.CREATED])
        # A refused call: its write is rolled back, the debit stays.
        fresh = Transfer("debit-2", SOURCE.id, TARGET.id, 1, 1)
        (results, _), outcome = await ledger.post_and_call(
            [fresh], [], opening, write_counter("c", fail=True), postings(2, []), brief=str.upper
        )
        assert results == [TransferResult.CREATED] and isinstance(outcome, LookupError)
        # A debit the ledger refuses (its id taken by other data): no call at all.
        clash = Transfer("debit-1", SOURCE.id, TARGET.id, 8, 1)
        (results, _), outcome = await ledger.post_and_call(
            [clash], [], opening, write_counter("d"), postings(2, []), brief=str.upper
        )
        assert results == [TransferResult.EXISTS_WITH_DIFFERENT_DATA] and outcome is None
        assert (await ledger.balances([TARGET.id]))[TARGET.id].credits_posted_fen == 7 + 2 + 2 + 1

    run(path, scenario)
    assert counters(path) == ["a", "b"]

"""``Ledger.post_and_record``: a post, the accounts it needs opened first, the balances before it
and the records behind it, in one round — the same on every ledger as the separate calls it
replaces (balances, open_accounts, post, record_offline) on the in-memory model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from ledger import events as ev
from ledger.core import Account, Balance, Ledger, OfflineRecord, Transfer, TransferResult
from ledger.kinds import ALLOWED_PAIRS, account_id
from ledger.kinds import AccountKind as K
from ledger.memory import MemoryLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.support.pg import pg_ledger

R = TransferResult
CARD_A, CARD_B, CARD_C, INSTITUTION = "31000000000000a1", "31000000000000b2", "31000000000c3", "i1"
SHADOW_A = account_id(K.CARD_ED_SHADOW, CARD_A)
PAYABLE = account_id(K.INSTITUTION_PAYABLE_INSURANCE, INSTITUTION)
CLEARING = account_id(K.ED_PROOF_CLEARING, ev.CENTRE)
FUND_BANK = account_id(K.FUND_BANK, ev.CENTRE)
RECORD = OfflineRecord(
    "000000000001", 1, "P0000001", 3, CARD_A, "ED", 300, "a1b2c3d4", "20261125101500", "t1", 4
)


def debit(tid: str, card: str, amount: int) -> Transfer:
    shadow = account_id(K.CARD_ED_SHADOW, card)
    return Transfer(tid, shadow, PAYABLE, amount, ev.TransferCode.CARD_DEBIT, f"debit|{tid}")


def opening(transfer: Transfer) -> list[Account]:
    """A card debit's accounts, from the account ids it names (as routing.purchases does)."""
    card = transfer.debit_account_id.partition(":")[2]
    return ev.card_accounts(card) + ev.institution_accounts(INSTITUTION)


async def prepare(ledger: Ledger) -> None:
    centre = [Account(CLEARING, K.ED_PROOF_CLEARING, ev.CENTRE)]
    centre.append(Account(FUND_BANK, K.FUND_BANK, ev.CENTRE))
    accounts = centre + ev.card_accounts(CARD_A) + ev.institution_accounts(INSTITUTION)
    await ledger.open_accounts(accounts)
    fund = Transfer("fund", CLEARING, SHADOW_A, 1_000, ev.TransferCode.LOAD_TO_SHADOW)
    assert await ledger.post([fund, debit("x", CARD_A, 100)]) == [R.CREATED, R.CREATED]


WINDOW = [
    debit("t1", CARD_A, 300),  # new
    debit("x", CARD_A, 100),  # posted before: a replay
    debit("x", CARD_A, 101),  # the same id, other data
    debit("t2", CARD_B, 50),  # card B has no accounts yet: opened first
    Transfer("t3", SHADOW_A, FUND_BANK, 5, ev.TransferCode.CARD_DEBIT),  # kinds not allowed
    debit("t4", CARD_A, 800),  # a shadow may go below zero (the card is the authority)
]
EXPECTED = [R.CREATED, R.EXISTS, R.EXISTS_WITH_DIFFERENT_DATA, R.CREATED]
EXPECTED += [R.KINDS_NOT_ALLOWED, R.CREATED]


async def scenario(ledger: Ledger) -> tuple[list[Balance], list[OfflineRecord]]:
    assert (K.CARD_ED_SHADOW, K.FUND_BANK) not in ALLOWED_PAIRS
    await prepare(ledger)
    records = [RECORD, replace(RECORD, psam_serial=2, transfer_id=None)]
    touched = {SHADOW_A, PAYABLE, FUND_BANK}
    expected_before = await ledger.balances(sorted(touched))
    results, before = await ledger.post_and_record(WINDOW, records, opening=opening)
    assert results == EXPECTED
    # card B's shadow did not exist before
    assert before == {account: b.balance_fen for account, b in expected_before.items()}
    assert before[SHADOW_A] == 900
    assert (await ledger.balance(account_id(K.CARD_ED_SHADOW, CARD_B))) is not None
    assert (await ledger.balance(SHADOW_A)).balance_fen == 900 - 300 - 800  # type: ignore[union-attr]
    assert await ledger.offline_records("P0000001", 3) == records

    # Again: everything a replay, the records already on file; before is after the first.
    again, before = await ledger.post_and_record(WINDOW[:2], records, opening=opening)
    assert again == [R.EXISTS, R.EXISTS]
    assert before[SHADOW_A] == -200

    # No opening: a missing account is a refusal the core remembers, nothing is opened.
    (refused,), before = await ledger.post_and_record([debit("t5", CARD_C, 1)])
    assert refused is R.DEBIT_ACCOUNT_NOT_FOUND
    assert set(before) == {PAYABLE}
    assert await ledger.balance(account_id(K.CARD_ED_SHADOW, CARD_C)) is None
    remembered = await ledger.lookup_transfers(["t5"])
    assert remembered["t5"].result is R.DEBIT_ACCOUNT_NOT_FOUND

    # Records alone.
    third = replace(RECORD, psam_serial=3, transfer_id="t4")
    assert await ledger.post_and_record([], [third]) == ([], {})
    assert await ledger.offline_records("P0000001", 3) == [*records, third]
    return sorted(await ledger.all_balances(), key=lambda b: b.account_id), records


async def separate_calls(ledger: Ledger) -> tuple[list[Balance], list[OfflineRecord]]:
    """The calls post_and_record replaces, on the model: what every ledger must end with."""
    await prepare(ledger)
    records = [RECORD, replace(RECORD, psam_serial=2, transfer_id=None)]
    found = await ledger.balances([SHADOW_A, PAYABLE, FUND_BANK, f"ed:{CARD_B}"])
    missing = [t for t in WINDOW if not {t.debit_account_id, t.credit_account_id} <= set(found)]
    await ledger.open_accounts([a for t in missing for a in opening(t)])
    assert await ledger.post(WINDOW) == EXPECTED
    await ledger.record_offline(records)
    await ledger.post(WINDOW[:2])
    await ledger.post([debit("t5", CARD_C, 1)])
    await ledger.record_offline([replace(RECORD, psam_serial=3, transfer_id="t4")])
    return sorted(await ledger.all_balances(), key=lambda b: b.account_id), records


def reference() -> tuple[list[Balance], list[OfflineRecord]]:
    return asyncio.run(separate_calls(MemoryLedger()))


def test_post_and_record_in_memory() -> None:
    assert asyncio.run(scenario(MemoryLedger())) == reference()


def test_post_and_record_on_sqlite(tmp_path: Path) -> None:
    async def run() -> tuple[list[Balance], list[OfflineRecord]]:
        ledger = SqliteLedger.open(tmp_path / "ledger.db")
        try:
            return await scenario(ledger)
        finally:
            await ledger.close()

    assert asyncio.run(run()) == reference()


@pytest.mark.postgres
def test_post_and_record_on_postgres() -> None:
    async def run() -> tuple[list[Balance], list[OfflineRecord]]:
        async with pg_ledger() as ledger:
            return await scenario(ledger)

    assert asyncio.run(run()) == reference()


async def concurrent(ledger: Ledger) -> tuple[Sequence[object], ...]:
    """Posts and post_and_records queued together (one writer batch, decided in queue order):
    each sees the ones before it."""
    await prepare(ledger)
    first = ledger.post_and_record([debit("c1", CARD_B, 10)], [RECORD], opening=opening)
    plain = ledger.post([debit("c2", CARD_B, 20)])
    second = ledger.post_and_record([debit("c3", CARD_B, 30)], opening=opening)
    (one, before_one), two, (three, before_three) = await asyncio.gather(first, plain, second)
    shadow_b = account_id(K.CARD_ED_SHADOW, CARD_B)
    assert (one, two, three) == ([R.CREATED], [R.CREATED], [R.CREATED])
    assert shadow_b not in before_one
    assert before_three[shadow_b] == -30
    assert before_three[PAYABLE] == 100 + 10 + 20
    return tuple(await ledger.offline_records("P0000001", 3))


def test_queued_together_on_sqlite(tmp_path: Path) -> None:
    async def run() -> tuple[Sequence[object], ...]:
        ledger = SqliteLedger.open(tmp_path / "ledger.db")
        try:
            return await concurrent(ledger)
        finally:
            await ledger.close()

    assert asyncio.run(run()) == (RECORD,)
    assert asyncio.run(concurrent(MemoryLedger())) == (RECORD,)


@pytest.mark.postgres
def test_queued_together_on_postgres() -> None:
    async def run() -> tuple[Sequence[object], ...]:
        async with pg_ledger() as ledger:
            return await concurrent(ledger)

    assert asyncio.run(run()) == (RECORD,)

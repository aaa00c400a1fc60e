"""Hypothesis on random sequences of business events for one card: every load or unload ends in
exactly one of its outcomes, at most one attempt per proof key reaches its target, and insurance
money and cardholders' EP money never cross (each side of the money balances on its own)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ledger import events as ev
from ledger.core import Balance, Ledger, QueuedReversal, ReviewItem, TransferResult
from ledger.events import Purse
from ledger.kinds import ALLOWED_PAIRS, Side, kind_of, side_of
from ledger.memory import MemoryLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.support.events import CARD, HOLDER, check_balances, deploy

loads = st.tuples(
    st.just("load"), st.sampled_from(Purse), st.integers(0, 3), st.integers(1, 40_000)
)
unloads = st.tuples(st.just("unload"), st.just(Purse.ED), st.integers(0, 3), st.integers(1, 3_000))
resolves = st.tuples(st.just("resolve"), st.booleans(), st.integers(0, 20), st.just(0))
checks = st.tuples(st.just("check"), st.sampled_from(Purse), st.integers(0, 4), st.just(0))
debits = st.tuples(st.just("debit"), st.sampled_from(Purse), st.integers(0, 5), st.integers(1, 900))
operations = st.lists(st.one_of(loads, unloads, resolves, checks, debits), max_size=40)


async def _play(ledger: Ledger, ops: list[tuple[object, ...]]) -> list[ev.Attempt]:
    attempts: list[ev.Attempt] = []
    for index, (op, a, b, c) in enumerate(ops):
        if op in ("load", "unload"):
            assert isinstance(a, Purse) and isinstance(b, int) and isinstance(c, int)
            party = HOLDER if a is Purse.ED else "b1"
            if op == "load":
                attempt = ev.load(f"T|{index}", f"r{index}", CARD, a, b, c, party)
            else:
                attempt = ev.unload(f"T|{index}", f"r{index}", CARD, b, c, HOLDER)
            if (await ev.post_into_doubt(ledger, attempt)).outcome is ev.Outcome.POSTED:
                attempts.append(attempt)
        elif op == "resolve" and attempts:
            assert isinstance(a, bool) and isinstance(b, int)
            await ev.resolve_attempt(ledger, attempts[b % len(attempts)], happened=a)
        elif op == "check":
            assert isinstance(a, Purse) and isinstance(b, int)
            await ev.check_chip_balance(ledger, CARD, a, 0, b, card_random=f"c{index}")
        elif op == "debit":
            assert isinstance(a, Purse) and isinstance(b, int) and isinstance(c, int)
            debit = ev.CardDebit("000000000001", b, CARD, a, c, "h1", "h1")
            await ev.post_card_debit(ledger, debit)
    return attempts


async def _finish(ledger: Ledger, attempts: list[ev.Attempt]) -> None:
    """The card comes online with a counter past every attempt; what is still ambiguous is
    resolved by a person as not happened."""
    for purse in Purse:
        await ev.prove_by_counter(ledger, CARD, purse, online_counter=10)
    for attempt in await ev.open_attempts(ledger, CARD, Purse.ED):
        await ev.resolve_attempt(ledger, attempt, happened=False)
    for attempt in await ev.open_attempts(ledger, CARD, Purse.EP):
        await ev.resolve_attempt(ledger, attempt, happened=False)


@settings(max_examples=150)
@given(operations)
def test_event_sequences(ops: list[tuple[object, ...]]) -> None:
    async def check() -> None:
        ledger = MemoryLedger()
        await deploy(ledger)
        attempts = await _play(ledger, ops)
        await _finish(ledger, attempts)
        await check_balances(ledger)
        model = ledger.model
        # exactly one outcome per attempt: its resolution is posted, to proof or back to source
        found = await ledger.lookup_transfers([a.resolve_id for a in attempts])
        reached: dict[str, int] = {}
        for attempt in attempts:
            resolution = found[attempt.resolve_id]
            assert resolution.result is TransferResult.CREATED
            credit = resolution.transfer.credit_account_id
            assert credit in (attempt.proof_clearing, attempt.source_account)
            if credit == attempt.proof_clearing:
                reached[attempt.proof_id] = reached.get(attempt.proof_id, 0) + 1
        assert all(count == 1 for count in reached.values())
        event(f"attempts reaching their target: {min(len(reached), 3)}+")
        for account, state in model.accounts.items():
            if "load:" in account:  # loads and unloads in doubt: all resolved
                assert state.debits_posted_fen == state.credits_posted_fen, account
        # each side of the money balances on its own: nothing crossed
        for side in Side:
            states = [s for s in model.accounts.values() if side_of(s.kind) is side]
            assert sum(s.debits_posted_fen - s.credits_posted_fen for s in states) == 0, side
        for transfer in model.posted:
            pair = (kind_of(transfer.debit_account_id), kind_of(transfer.credit_account_id))
            assert pair in ALLOWED_PAIRS

    asyncio.run(check())


@settings(max_examples=15)
@given(operations)
def test_event_sequences_on_sqlite_match_the_model(ops: list[tuple[object, ...]]) -> None:
    async def play(ledger: Ledger) -> tuple[list[Balance], list[ReviewItem], list[QueuedReversal]]:
        await deploy(ledger)
        attempts = await _play(ledger, ops)
        await _finish(ledger, attempts)
        balances = sorted(await ledger.all_balances(), key=lambda b: b.account_id)
        return balances, await ledger.reviews(), await ledger.queued_reversals()

    async def check(path: Path) -> None:
        expected = await play(MemoryLedger())
        ledger = SqliteLedger.open(path)
        try:
            assert await play(ledger) == expected
        finally:
            await ledger.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(check(Path(directory) / "ledger.db"))

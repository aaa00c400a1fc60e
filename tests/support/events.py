"""A small deployment for the event tests, on any backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ledger import events as ev
from ledger.core import AccountFlags, Ledger
from ledger.kinds import AccountKind as K
from ledger.memory import MemoryLedger
from ledger.sqlite_ledger import SqliteLedger
from tests.support.pg import pg_ledger

PERSONAL_FEN = 100_000
POOLED_FEN = 300_000
CARD = "k1"
HOLDER = "c1"


@asynccontextmanager
async def backend(name: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    if name == "memory":
        yield MemoryLedger()
    elif name == "sqlite":
        ledger = SqliteLedger.open(tmp_path / "ledger.db")
        try:
            yield ledger
        finally:
            await ledger.close()
    else:
        async with pg_ledger() as pg:
            yield pg


async def deploy(ledger: Ledger) -> None:
    """Centre, unit u1, cardholder c1 with card k1, hospitals h1 and h2, bank b1; funded."""
    accounts = ev.centre_accounts() + ev.unit_accounts("u1") + ev.cardholder_accounts(HOLDER)
    accounts += ev.card_accounts(CARD) + ev.card_accounts("k2")
    accounts += ev.institution_accounts("h1") + ev.institution_accounts("h2")
    accounts += ev.bank_accounts("b1")
    await ledger.open_accounts(accounts)
    line = ev.ContributionLine("u1", "2026-11", HOLDER, PERSONAL_FEN, POOLED_FEN)
    assert (await ev.post_contribution(ledger, line)).outcome is ev.Outcome.POSTED


async def balance_fen(ledger: Ledger, account: str) -> int:
    balance = await ledger.balance(account)
    assert balance is not None, account
    return balance.balance_fen


async def check_balances(ledger: Ledger) -> None:
    """Sum to zero, never-negative holds, the proof clearing accounts are empty."""
    balances = await ledger.all_balances()
    assert sum(b.debits_posted_fen - b.credits_posted_fen for b in balances) == 0
    for b in balances:
        if AccountFlags.NEVER_NEGATIVE in b.flags:
            assert b.balance_fen >= 0, b
        if b.kind in (K.ED_PROOF_CLEARING, K.EP_PROOF_CLEARING):
            assert b.balance_fen == 0, b

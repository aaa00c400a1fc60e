"""Checks every ledger state must pass, whatever happened before."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.core import AccountFlags, Balance, Ledger, Transfer, TransferResult
from ledger.kinds import ALLOWED_PAIRS, kind_of, side_of


async def check_invariants(ledger: Ledger, posted: Sequence[Transfer]) -> None:
    """Sum to zero, never-negative holds, each account's totals equal its posted transfers',
    and every posted transfer joins an allowed pair of kinds on one side of the money."""
    balances = {b.account_id: b for b in await ledger.all_balances()}
    assert sum(b.debits_posted_fen for b in balances.values()) == sum(
        b.credits_posted_fen for b in balances.values()
    )
    for balance in balances.values():
        _check_never_negative(balance)
    debits: dict[str, int] = {}
    credits: dict[str, int] = {}
    for transfer in posted:
        pair = (kind_of(transfer.debit_account_id), kind_of(transfer.credit_account_id))
        assert pair in ALLOWED_PAIRS, pair
        assert side_of(pair[0]) is side_of(pair[1]), pair
        debits[transfer.debit_account_id] = debits.get(transfer.debit_account_id, 0) + (
            transfer.amount_fen
        )
        credits[transfer.credit_account_id] = credits.get(transfer.credit_account_id, 0) + (
            transfer.amount_fen
        )
    for account, balance in balances.items():
        assert balance.debits_posted_fen == debits.get(account, 0), account
        assert balance.credits_posted_fen == credits.get(account, 0), account


def _check_never_negative(balance: Balance) -> None:
    if AccountFlags.NEVER_NEGATIVE in balance.flags:
        assert balance.balance_fen >= 0, balance


async def posted_transfers(ledger: Ledger, ids: Sequence[str]) -> list[Transfer]:
    found = await ledger.lookup_transfers(ids)
    return [p.transfer for p in found.values() if p.result is TransferResult.CREATED]

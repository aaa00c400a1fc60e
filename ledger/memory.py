"""The in-memory reference model: the whole ledger in dicts, no IO. Tests compare the SQL ledgers
against it; it is also a handy ledger for simulators.

>>> import asyncio
>>> from ledger.kinds import AccountKind as K
>>> async def demo() -> int:
...     ledger = MemoryLedger()
...     await ledger.open_accounts([new_account(K.FUND_BANK, "x"),
...                                 new_account(K.CONTRIBUTIONS_RECEIVABLE, "u")])
...     await ledger.transfer(Transfer("t", "fundbank:x", "contrib:u", 7, code=2))
...     balance = await ledger.balance("contrib:u")
...     return balance.balance_fen if balance else 0
>>> asyncio.run(demo())
-7
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.core import (
    Account,
    AccountResult,
    Balance,
    CloseResult,
    Ledger,
    OfflineRecord,
    Opening,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
    Transfer,
    TransferResult,
    new_account,
)
from ledger.state import (
    AccountState,
    Batch,
    Remembered,
    before_and_missing,
    check_open,
    offline_decision,
    open_missing,
)

HISTORY_LIMIT_MAX = 10_000


class MemoryModel:
    """The synchronous, pure model; :class:`MemoryLedger` is its async face."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        self.remembered: dict[str, Remembered] = {}
        self.seq: dict[str, int] = {}
        self.posted: list[Transfer] = []
        self.review_items: dict[str, ReviewItem] = {}
        self.reversals: dict[str, QueuedReversal] = {}
        self.offline: dict[tuple[str, int], OfflineRecord] = {}

    def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        results = []
        for account in accounts:
            result = check_open(account, self.accounts.get(account.id))
            if result is AccountResult.CREATED:
                self.accounts[account.id] = AccountState.opened(account)
            results.append(result)
        return results

    def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        results = []
        for account in ids:
            state = self.accounts.get(account)
            if state is None:
                results.append(CloseResult.NOT_FOUND)
            elif state.closed:
                results.append(CloseResult.ALREADY_CLOSED)
            else:
                state.closed = True
                results.append(CloseResult.CLOSED)
        return results

    def post(self, transfers: Sequence[Transfer], *, linked: bool = False) -> list[TransferResult]:
        batch = Batch(self.accounts, self.remembered)
        results = batch.post(transfers, linked=linked)
        self._written(batch)
        return results

    def post_and_record(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord],
        opening: Opening | None,
    ) -> tuple[list[TransferResult], dict[str, int]]:
        before, wanted = before_and_missing(self.accounts, transfers, opening)
        open_missing(self.accounts, wanted)
        batch = Batch(self.accounts, self.remembered)
        results = batch.post(transfers, linked=False)
        self._written(batch)
        self.record_offline(records)
        return results, before

    def _written(self, batch: Batch) -> None:
        for row in batch.written:
            self.seq[row.transfer.id] = len(self.seq) + 1
            if row.result is TransferResult.CREATED:
                self.posted.append(row.transfer)

    def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        results = []
        for record in records:
            key = (record.psam_terminal_no, record.psam_serial)
            held = self.offline.get(key)
            facts = None if held is None else (held.transfer_id is not None, *_where(held))
            new, write = offline_decision(facts, record)
            if write:
                self.offline[key] = record
            results.append(new)
        return results

    def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        found: dict[tuple[str, str], list[tuple[int, str]]] = {card: [] for card in cards}
        for r in self.offline.values():
            card = (r.application_serial, r.purse)
            if card in found and r.transfer_id is not None and r.card_counter is not None:
                found[card].append((r.card_counter, r.card_datetime))
        return {card: sorted(pairs) for card, pairs in found.items()}

    def lookup(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        found = {}
        for transfer in ids:
            row = self.remembered.get(transfer)
            if row is not None:
                found[transfer] = PostedTransfer(row.transfer, row.result, self.seq[transfer])
        return found

    def history(self, account: str, limit: int) -> list[PostedTransfer]:
        limit = max(0, min(limit, HISTORY_LIMIT_MAX))
        touching = [t for t in self.posted if account in (t.debit_account_id, t.credit_account_id)]
        chosen = touching[-limit:] if limit else []
        return [PostedTransfer(t, TransferResult.CREATED, self.seq[t.id]) for t in chosen]


class MemoryLedger(Ledger):
    """:class:`Ledger` over a :class:`MemoryModel`."""

    def __init__(self, model: MemoryModel | None = None) -> None:
        self.model = model or MemoryModel()

    async def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        return self.model.open_accounts(accounts)

    async def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        return self.model.close_accounts(ids)

    async def post(
        self, transfers: Sequence[Transfer], *, linked: bool = False
    ) -> list[TransferResult]:
        return self.model.post(transfers, linked=linked)

    async def post_and_record(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord] = (),
        *,
        opening: Opening | None = None,
    ) -> tuple[list[TransferResult], dict[str, int]]:
        return self.model.post_and_record(transfers, records, opening)

    async def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        accounts = self.model.accounts
        return {a: accounts[a].balance() for a in ids if a in accounts}

    async def all_balances(self) -> list[Balance]:
        return [state.balance() for state in self.model.accounts.values()]

    async def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        return self.model.lookup(ids)

    async def history(self, account: str, limit: int = 100) -> list[PostedTransfer]:
        return self.model.history(account, limit)

    async def add_review(self, item: ReviewItem) -> bool:
        return self.model.review_items.setdefault(item.key, item) is item

    async def reviews(self) -> list[ReviewItem]:
        return list(self.model.review_items.values())

    async def queue_reversal(self, item: QueuedReversal) -> bool:
        return self.model.reversals.setdefault(item.key, item) is item

    async def queued_reversals(self) -> list[QueuedReversal]:
        return list(self.model.reversals.values())

    async def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        return self.model.record_offline(records)

    async def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        return self.model.offline_counters(cards)

    async def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        held = self.model.offline.values()
        return [r for r in held if (r.terminal_id, r.batch_no) == (terminal_id, batch_no)]

    async def close(self) -> None:
        return None


def _where(record: OfflineRecord) -> tuple[str, int]:
    return record.terminal_id, record.batch_no


__all__ = ["MemoryLedger", "MemoryModel", "new_account"]

"""The accounts a PostgreSQL group commit's postings decide on (``ledger.pg_post``): what the
batch has read of them and of the transfer ids, kept to be checked by a write with no
transaction open (``ledger.pg_write``); the accounts and ids read after the batch's read; and
each posting job decided in the batch's ``ledger.state.Batch``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from ledger import sql_rows as rows
from ledger.core import Account, Transfer
from ledger.kinds import is_shared
from ledger.pg_batch_sql import LOAD, REMEMBERED, load_sql
from ledger.pg_fold import NeedsTransaction
from ledger.pg_write import Totals
from ledger.state import (
    AccountState,
    Batch,
    before_and_missing,
    needed_ids,
    open_missing,
)

LOAD_FREE = load_sql(lock=False)


class Job(Protocol):
    kind: str
    args: tuple[Any, ...]
    value: Any


@dataclass(slots=True)
class Asked:
    """The accounts and transfer ids the batch has read (found or not); ``lock``: inside the
    batch's transaction, reads lock what the batch decides on, else (``free``) ``checked``
    keeps it as read, for the write to check."""

    accounts: set[str]
    ids: set[str]
    lock: bool = True
    checked: dict[str, Totals] = field(default_factory=dict)
    hinted: bool = False  # some of ``checked`` recalled, not read: only the write checks them
    # ids taken as new, not read: only the write's insert of each checks it
    unread: set[str] = field(default_factory=set)

    def decided_on(self, found: Sequence[Any] | None) -> None:
        if self.lock:
            return
        if any(is_shared(row[0]) for row in found or ()):  # never negative: a hot row decided on
            raise NeedsTransaction("a shared account the batch decides on")
        self.checked.update({row[0]: (row[4], row[5], row[6]) for row in found or ()})

    def recalled(self, known: Mapping[str, AccountState]) -> None:
        """Accounts the writer knew (``ledger.pg_write.Known``), decided on as if read: checked
        by the write, the shared ones moved by delta as read ones are."""
        before = len(self.checked)
        self.checked.update(
            (a, (s.debits_posted_fen, s.credits_posted_fen, s.closed))
            for a, s in known.items()
            if not is_shared(a)
        )
        self.hinted |= len(self.checked) > before


def split_shared(account_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """The accounts a batch locks as it reads them, and the shared ones it does not (both in id
    order)."""
    ordered = sorted(account_ids)
    return [a for a in ordered if not is_shared(a)], [a for a in ordered if is_shared(a)]


async def load(
    connection: asyncpg.Connection, batch: Batch, account_ids: Iterable[str], asked: Asked
) -> None:
    """Accounts read after the batch's read: locked in id order (or kept to be checked), the
    shared ones not."""
    locking, shared = split_shared(account_ids)
    if locking or shared:
        sql = LOAD if asked.lock else LOAD_FREE
        locked, unlocked = await connection.fetchrow(sql, locking, shared)
        asked.decided_on(locked)
        found = (*(locked or ()), *(unlocked or ()))
        batch.accounts.update({row[0]: rows.account_state(row) for row in found})


async def decide(
    connection: asyncpg.Connection, batch: Batch, jobs: Iterable[Job], asked: Asked
) -> list[Account]:
    """Each job decided in ``batch`` (which holds what they name, or knows it missing); the
    accounts opened on the way (those that exist read first: locked, unless shared)."""
    opened: list[Account] = []
    for job in jobs:
        if job.kind == "post":
            transfers, linked = job.args
            job.value = batch.post(transfers, linked=linked)
            continue
        transfers, _, opening = job.args[:3]
        before, wanted = before_and_missing(batch.accounts, transfers, opening)
        if wanted:  # those that exist, for open_missing to see
            missing = [a.id for a in wanted if a.id not in batch.accounts]
            await load(connection, batch, missing, asked)
            opened += open_missing(batch.accounts, wanted)
        job.value = (batch.post(transfers, linked=False), before)
    return opened


async def read_more(
    connection: asyncpg.Connection, batch: Batch, transfers: Sequence[Transfer], asked: Asked
) -> None:
    """What ``transfers`` name that the batch has not read yet (none when the jobs said the
    postings their calls would name): the accounts locked, the ids looked up."""
    wanted_ids, wanted_accounts = needed_ids(transfers)
    accounts, ids = sorted(wanted_accounts - asked.accounts), sorted(wanted_ids - asked.ids)
    asked.accounts.update(accounts)
    asked.ids.update(ids)
    await load(connection, batch, accounts, asked)
    if ids:
        found = await connection.fetch(REMEMBERED, ids)
        batch.remembered.update({r[0]: rows.remembered(r) for r in found})

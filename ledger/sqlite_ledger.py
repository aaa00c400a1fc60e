"""The ledger on embedded SQLite: WAL, synchronous=FULL, one writer, group commit.

Every operation (reads too, so that a caller always reads its own writes) is a typed job
(`ledger.writer.jobs`) on the file's one writer: a thread (`ledger.writer.engine`) or a process
of its own (`ledger.writer.process`, the daemon's), running the statements of
`ledger.writer.store.SqliteStore`. Results reach callers only after the batch's COMMIT
returned. On the daemon the medical store's writes run on this writer too (`Call` jobs): one
writer per file, one commit per group, no wait for SQLite's write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ledger.core import (
    Account,
    AccountResult,
    Balance,
    CloseResult,
    Health,
    Ledger,
    OfflineRecord,
    Opening,
    PostedTransfer,
    QueuedReversal,
    ReviewItem,
    Transfer,
    TransferResult,
)
from ledger.migrate import upgrade_sqlite
from ledger.writer import jobs as j
from ledger.writer.engine import BATCH_MAX, WINDOW_S, Writer
from ledger.writer.process import ProcessWriter, Restarts
from ledger.writer.store import SqliteStore

T = TypeVar("T")
#: What the writer process's jobs carry (`ledger.writer.wire.Crossing`), by name: the child
#: builds its wire from it too.
CROSSING = "ledger.crossing:sqlite_writer"


class SqliteLedger(Ledger):
    """:class:`Ledger` on SQLite. Open with :meth:`open` (or :meth:`open_attached` on a
    running loop); close with :meth:`close`."""

    def __init__(self, writer: Writer | ProcessWriter, store: SqliteStore | None = None) -> None:
        self.writer, self.store = writer, store  # store: the writer's, when it is a thread

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        batch_max: int = BATCH_MAX,
        window_s: float = WINDOW_S,
        migrate: bool = True,
        process: bool = False,
        restarts: Restarts | None = None,
    ) -> SqliteLedger:
        """Migrate the database at `path` to the newest schema and start the writer: a thread,
        or with ``process`` a process of its own (the daemon's, so that the event loop has an
        interpreter lock to itself), attached to the loop of its first call."""
        if migrate:
            upgrade_sqlite(path)
        if process:  # it gathers without a window
            child = ProcessWriter(path, crossing=CROSSING, batch_max=batch_max, restarts=restarts)
            child.start()
            return cls(child)
        store = SqliteStore(path)
        writer = store.writer(batch_max=batch_max, window_s=window_s)
        writer.start()
        return cls(writer, store)

    @classmethod
    async def open_attached(
        cls, path: Path | str, *, window_s: float = WINDOW_S, process: bool = False
    ) -> SqliteLedger:
        """:meth:`open` on the running loop: a writer process carries its jobs on this loop
        from the start, so that threads (the HIS API's) may write through it at once."""
        ledger = cls.open(path, window_s=window_s, process=process)
        if isinstance(ledger.writer, ProcessWriter):
            await ledger.writer.attach()
        return ledger

    def health(self) -> Health:
        return self.writer.health()

    async def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        result: list[AccountResult] = await self.writer.submit(j.OpenAccounts(list(accounts)))
        return result

    async def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]:
        result: list[CloseResult] = await self.writer.submit(j.CloseAccounts(list(ids)))
        return result

    async def post(
        self, transfers: Sequence[Transfer], *, linked: bool = False
    ) -> list[TransferResult]:
        result: list[TransferResult] = await self.writer.submit(j.Post(list(transfers), linked))
        return result

    async def post_and_call(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord],
        opening: Opening,
        call: j.Write[T],
        postings: j.Postings,
        likely: Sequence[Transfer] = (),
        brief: Callable[[T], Any] | None = None,
    ) -> j.PostedThenCalled[Any]:
        """:meth:`post_and_record`, then — when every transfer is in the ledger (posted now or
        before) — ``call`` (a write of another store on this file, in its savepoint) and the
        postings it names, all in one writer round and one transaction: a card debit, the bill
        it completes and the bill's pooled share (`ledger.writer.jobs.PostThenCall`).
        ``likely`` is for `PgLedger.post_and_call`'s sake: the writer reads what it needs
        without a round trip. ``brief``: what of the call's value comes back (it must pickle:
        the writer process applies it)."""
        op = j.PostThenCall(list(transfers), list(records), opening, call, postings, brief)
        found: j.PostedThenCalled[Any] = await self.writer.submit(op)
        return found

    async def post_and_record(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord] = (),
        *,
        opening: Opening | None = None,
    ) -> j.Posted:
        result: j.Posted = await self.writer.submit(
            j.PostAndRecord(list(transfers), list(records), opening)
        )
        return result

    async def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        result: dict[str, Balance] = await self.writer.submit(j.Balances(list(ids)))
        return result

    async def all_balances(self) -> list[Balance]:
        result: list[Balance] = await self.writer.submit(j.AllBalances())
        return result

    async def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        result: dict[str, PostedTransfer] = await self.writer.submit(j.LookupTransfers(list(ids)))
        return result

    async def history(self, account: str, limit: int = 100) -> list[PostedTransfer]:
        result: list[PostedTransfer] = await self.writer.submit(j.History(account, limit))
        return result

    async def add_review(self, item: ReviewItem) -> bool:
        return bool(await self.writer.submit(j.AddReview(item)))

    async def reviews(self) -> list[ReviewItem]:
        result: list[ReviewItem] = await self.writer.submit(j.Reviews())
        return result

    async def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        result: list[bool] = await self.writer.submit(j.RecordOffline(list(records)))
        return result

    async def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        result: dict[tuple[str, str], list[tuple[int, str]]] = await self.writer.submit(
            j.OfflineCounters(list(cards))
        )
        return result

    async def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        result: list[OfflineRecord] = await self.writer.submit(
            j.OfflineRecords(terminal_id, batch_no)
        )
        return result

    async def queue_reversal(self, item: QueuedReversal) -> bool:
        return bool(await self.writer.submit(j.QueueReversal(item)))

    async def queued_reversals(self) -> list[QueuedReversal]:
        result: list[QueuedReversal] = await self.writer.submit(j.QueuedReversals())
        return result

    async def close(self) -> None:
        await self.writer.stop()

"""What a writer is asked to do: one frozen dataclass per operation, matched with ``match`` by
whoever runs it, and the named records its answers are. A leaf: it knows the ledger's records
and nothing of the writers, the medical store or the wire.

A job is one caller's operation and where its answer goes (`Job`); every answer is delivered
only after the batch holding it committed.

>>> Posted([], {}).results
[]
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ledger.core import (
    Account,
    OfflineRecord,
    Opening,
    QueuedReversal,
    ReviewItem,
    Transfer,
    TransferResult,
)

T = TypeVar("T")
#: A write of another store on the ledger's file (the medical store's), run on the writer's
#: connection inside the batch's transaction. An object, not a closure, when it may cross to
#: the writer process (`ledger.medical.sql_writes`).
Write = Callable[[sqlite3.Connection], T]
#: The transfers a `Write`'s value names, and the accounts they may need opened.
Postings = Callable[[Any], tuple[Sequence[Transfer], Opening | None]]


# -- answers ---------------------------------------------------------------------------------
class Posted(NamedTuple):
    """A `PostAndRecord`'s answer: each transfer's result, and the balances (``balance_fen``)
    the touched accounts that existed had just before."""

    results: list[TransferResult]
    before: dict[str, int]


class CalledAndPosted(NamedTuple, Generic[T]):
    """A `CallThenPost`'s answer: the write's value and the results of the postings it named."""

    value: T
    results: list[TransferResult]


class PostedThenCalled(NamedTuple, Generic[T]):
    """A `PostThenCall`'s answer: its posting's, and the call's outcome — None when it did not
    run (a transfer not in the ledger), else what it gave or the exception it raised (nothing
    of it written)."""

    posted: Posted
    called: CalledAndPosted[T] | BaseException | None


def briefed(brief: Callable[[Any], Any] | None, outcome: Any) -> Any:
    """A `PostThenCall`'s call outcome as its caller reads it: a `CalledAndPosted`'s value
    through ``brief`` (when there is one); None or the exception as they are.

    >>> briefed(len, CalledAndPosted("abc", [])).value
    3
    """
    if brief is None or not isinstance(outcome, CalledAndPosted):
        return outcome
    return CalledAndPosted(brief(outcome.value), outcome.results)


# -- writes ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Post:
    """Transfers; with ``linked`` all of them post or none. Answer: list[TransferResult]."""

    transfers: list[Transfer]
    linked: bool = False


@dataclass(frozen=True, slots=True)
class PostAndRecord:
    """`Post` (not linked) then the card-debit records behind it, the accounts ``opening``
    gives for a transfer meeting one missing opened first. Answer: `Posted`."""

    transfers: list[Transfer]
    records: list[OfflineRecord]
    opening: Opening | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """A `Write`, failing alone (its own exception) when it raises. Answer: its value.
    Unsynced (``synced=False``): a batch made only of such calls commits without its own fsync
    (durable against the process's crash, not the machine's; the next batch's fsync covers it).
    The retransmission cache's replies on SQLite."""

    write: Write[Any]
    synced: bool = True


@dataclass(frozen=True, slots=True)
class CallThenPost:
    """A `Write`, then the postings its value names, in the same transaction. Answer:
    `CalledAndPosted`."""

    write: Write[Any]
    postings: Postings


@dataclass(frozen=True, slots=True)
class PostThenCall:
    """A `PostAndRecord`, then — when every transfer is in the ledger (posted now or before) —
    a `CallThenPost`, all in one transaction: a card debit, the bill it completes and the
    bill's pooled share. Answer: `PostedThenCalled`, the call's value as ``brief`` gives it
    when there is one (what of it the caller reads: the rest is not sent back)."""

    transfers: list[Transfer]
    records: list[OfflineRecord]
    opening: Opening | None
    write: Write[Any]
    postings: Postings
    brief: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class OpenAccounts:
    accounts: list[Account]


@dataclass(frozen=True, slots=True)
class CloseAccounts:
    ids: list[str]


@dataclass(frozen=True, slots=True)
class AddReview:
    item: ReviewItem


@dataclass(frozen=True, slots=True)
class QueueReversal:
    item: QueuedReversal


@dataclass(frozen=True, slots=True)
class RecordOffline:
    records: list[OfflineRecord]


# -- reads (through the writer too: a caller reads its own writes) ----------------------------
@dataclass(frozen=True, slots=True)
class Balances:
    ids: list[str]


@dataclass(frozen=True, slots=True)
class AllBalances:
    pass


@dataclass(frozen=True, slots=True)
class LookupTransfers:
    ids: list[str]


@dataclass(frozen=True, slots=True)
class History:
    account: str
    limit: int


@dataclass(frozen=True, slots=True)
class Reviews:
    pass


@dataclass(frozen=True, slots=True)
class QueuedReversals:
    pass


@dataclass(frozen=True, slots=True)
class OfflineCounters:
    cards: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class OfflineRecords:
    terminal_id: str
    batch_no: int


Read = (
    Balances | AllBalances | LookupTransfers | History | Reviews | QueuedReversals
    | OfflineCounters | OfflineRecords
)  # fmt: skip
#: Every operation a writer runs.
Operation = (
    Post | PostAndRecord | Call | CallThenPost | PostThenCall | OpenAccounts | CloseAccounts
    | AddReview | QueueReversal | RecordOffline | Read
)  # fmt: skip
#: Decided together by the store (one SELECT of the accounts and one of the ids).
POSTS = (Post, PostAndRecord)
#: Run before the others in a batch (the medical store's writes).
CALLS = (Call, CallThenPost)
#: Every operation class, for the wire's tables.
OPERATIONS: tuple[type, ...] = (
    Post, PostAndRecord, Call, CallThenPost, PostThenCall, OpenAccounts, CloseAccounts,
    AddReview, QueueReversal, RecordOffline, Balances, AllBalances, LookupTransfers, History,
    Reviews, QueuedReversals, OfflineCounters, OfflineRecords,
)  # fmt: skip
ANSWERS: tuple[type, ...] = (Posted, CalledAndPosted, PostedThenCalled)


@dataclass(slots=True, eq=False)
class Job:
    """One caller's operation and where its answer goes: an event loop's future, or a
    synchronous caller's event (`wait`)."""

    op: Operation
    loop: asyncio.AbstractEventLoop | None = None  # None: a synchronous caller waiting on `done`
    future: asyncio.Future[Any] | None = None
    value: Any = None
    error: BaseException | None = None
    done: threading.Event | None = None
    ticket: int = 0  # a job run for another process: its number there

    def wait(self) -> Any:
        """A synchronous caller's wait: its value once delivered, or its error raised."""
        assert self.done is not None
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(slots=True)
class Stats:
    """A writer's counts (tests and metrics)."""

    batches: int = 0
    jobs: int = 0
    commits_failed: int = 0  # batches rolled back (then run again job by job)
    largest: int = 0  # the most jobs one commit carried


class Submits(Protocol):
    """A writer as its callers see it: the thread (`ledger.writer.engine.Writer`) or the
    process (`ledger.writer.process.ProcessWriter`)."""

    async def submit(self, op: Operation) -> Any:
        """The operation's answer, once its batch committed (an event loop's caller)."""
        ...

    def run(self, op: Operation) -> Any:
        """`submit` for a synchronous caller on another thread."""
        ...

    @property
    def waiting(self) -> int:
        """Jobs queued or in flight, not yet answered."""
        ...

    @property
    def stats(self) -> Stats: ...

"""The double-entry core's values and its narrow interface (DESIGN §5).

Accounts hold posted debits and credits in integer fen; transfers are immutable and move
`amount_fen` from a debit account to a credit account. A transfer's id is derived from the
business event (:func:`transfer_id`) and is its idempotency key.

Results, in precedence order: a transfer is checked top to bottom and gets the first result that
applies (the enum's values follow the same order).

====================================  =============================================================
CREATED                               posted now
EXISTS                                the same id with the same data was posted before; nothing
                                      moves (a replay of a remembered refusal returns that refusal)
ID_INVALID, AMOUNT_OUT_OF_RANGE,      the transfer itself is malformed; never remembered
ACCOUNTS_MUST_BE_DIFFERENT,
REFERENCE_TOO_LONG
EXISTS_WITH_DIFFERENT_DATA            the id was used for another transfer; nothing moves
DEBIT/CREDIT_ACCOUNT_NOT_FOUND        checked before anything about the accounts' state
KINDS_NOT_ALLOWED                     the pair of kinds is not in :data:`ledger.kinds.ALLOWED_PAIRS`
DEBIT/CREDIT_ACCOUNT_CLOSED
INSUFFICIENT_FUNDS                    a never-negative debit account would go below zero
LINKED_EVENT_FAILED                   another transfer of the same linked batch failed
====================================  =============================================================

The replay check comes before the accounts' state so that a retransmission always gets the first
answer, whatever happened to the accounts since. Refusals from NOT_FOUND to INSUFFICIENT_FUNDS are
remembered under the id (a replay returns the first refusal and never posts later), except inside
a linked batch that failed, which leaves no trace.
"""

from __future__ import annotations

import abc
import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.kinds import (
    DEBIT_NORMAL_KINDS,
    NEVER_NEGATIVE_BY_DEFAULT,
    AccountKind,
    account_id,
)

ID_CHARS_MAX = 64
REFERENCE_CHARS_MAX = 240
AMOUNT_FEN_MAX = 10**15  # ten trillion yuan: far above any real amount, far below 2**63


class AccountFlags(enum.IntFlag):
    NONE = 0
    NEVER_NEGATIVE = 1  # debits may never exceed credits (only on NEVER_NEGATIVE_KINDS)


class TransferResult(enum.IntEnum):
    """Outcome of one transfer; lower values take precedence (see module docstring)."""

    CREATED = 0
    EXISTS = 1
    ID_INVALID = 2
    AMOUNT_OUT_OF_RANGE = 3
    ACCOUNTS_MUST_BE_DIFFERENT = 4
    REFERENCE_TOO_LONG = 5
    EXISTS_WITH_DIFFERENT_DATA = 6
    DEBIT_ACCOUNT_NOT_FOUND = 7
    CREDIT_ACCOUNT_NOT_FOUND = 8
    KINDS_NOT_ALLOWED = 9
    DEBIT_ACCOUNT_CLOSED = 10
    CREDIT_ACCOUNT_CLOSED = 11
    INSUFFICIENT_FUNDS = 12
    LINKED_EVENT_FAILED = 13

    @property
    def ok(self) -> bool:
        """True when the money is (now or already) posted."""
        return self in (TransferResult.CREATED, TransferResult.EXISTS)


#: Refusals that depend on the ledger's state and are remembered under the transfer's id.
REMEMBERED_REFUSALS = frozenset(
    TransferResult(value)
    for value in range(TransferResult.DEBIT_ACCOUNT_NOT_FOUND, TransferResult.LINKED_EVENT_FAILED)
)


class AccountResult(enum.IntEnum):
    """Outcome of opening one account, in precedence order."""

    CREATED = 0
    EXISTS = 1
    ID_MISMATCH = 2  # the id is not account_id(kind, owner)
    FLAGS_NOT_ALLOWED = 3  # never-negative on a kind that may not carry it (e.g. a card shadow)
    EXISTS_WITH_DIFFERENT_DATA = 4


class CloseResult(enum.IntEnum):
    CLOSED = 0
    ALREADY_CLOSED = 1
    NOT_FOUND = 2


@dataclass(frozen=True, slots=True)
class Account:
    """An account to open. Use :func:`new_account` for the id and the default flags."""

    id: str
    kind: AccountKind
    owner: str
    flags: AccountFlags = AccountFlags.NONE


@dataclass(frozen=True, slots=True)
class Transfer:
    """An immutable movement of `amount_fen` from the debit to the credit account."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount_fen: int
    code: int
    reference: str = ""


@dataclass(frozen=True, slots=True)
class PostedTransfer:
    """A transfer as the ledger remembers it: its first result and its commit order."""

    transfer: Transfer
    result: TransferResult
    seq: int
    posted_at_us: int | None = None  # when it was committed: `history` gives it, else None


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    kind: AccountKind
    flags: AccountFlags
    debits_posted_fen: int
    credits_posted_fen: int
    closed: bool

    @property
    def balance_fen(self) -> int:
        """Signed by the kind's normal side: debits - credits for assets, else credits - debits."""
        if self.kind in DEBIT_NORMAL_KINDS:
            return self.debits_posted_fen - self.credits_posted_fen
        return self.credits_posted_fen - self.debits_posted_fen

    def __reduce__(self) -> tuple[Callable[..., Balance], tuple[object, ...]]:
        """Its values, the kind and flags by value, rebuilt in one call (the writer process's
        answers to `Balances` reads): each enum on its own cost more."""
        values = self.debits_posted_fen, self.credits_posted_fen, self.closed
        return _balance, (self.account_id, self.kind._value_, self.flags._value_, *values)


_KINDS = {kind.value: kind for kind in AccountKind}
_FLAGS = {flags.value: flags for flags in (AccountFlags.NONE, AccountFlags.NEVER_NEGATIVE)}


#: Balance's slots set directly, as its frozen ``__init__`` does through ``object.__setattr__``
#: (0.6 µs a balance against its 1.4).
_SETS = tuple(getattr(Balance, name).__set__ for name in Balance.__slots__)


def _balance(
    account_id: str, kind: str, flags: int, debits: int, credits: int, closed: bool
) -> Balance:
    """A `Balance` as `Balance.__reduce__` gave it."""
    found = _FLAGS.get(flags)
    balance: Balance = object.__new__(Balance)
    set_id, set_kind, set_flags, set_debits, set_credits, set_closed = _SETS
    set_id(balance, account_id)
    set_kind(balance, _KINDS[kind])
    set_flags(balance, AccountFlags(flags) if found is None else found)
    set_debits(balance, debits)
    set_credits(balance, credits)
    set_closed(balance, closed)
    return balance


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """An exception held for a person; `key` makes recording it idempotent."""

    key: str
    reason: str
    reference: str
    amount_fen: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OfflineRecord:
    """A card debit record a terminal sent (batch upload 0320 or advice 0220), as received.

    (`psam_terminal_no`, `psam_serial`) is the debit's identity (DESIGN §5); `terminal_id` and
    `batch_no` are the sending terminal's (the batch in which it last sent the record);
    `transfer_id` is the card debit's transfer when its TAC verified, None when it did not (such a
    record never posts); `card_counter` the card's offline counter of the purse before the debit,
    when the record carries it."""

    psam_terminal_no: str
    psam_serial: int
    terminal_id: str
    batch_no: int
    application_serial: str
    purse: str  # ED | EP
    amount_fen: int
    tac: str  # 8 hex digits
    card_datetime: str  # yyyymmddhhmmss the TAC covers
    transfer_id: str | None
    card_counter: int | None = None


@dataclass(frozen=True, slots=True)
class QueuedReversal:
    """A reversal to send to a bank by store-and-forward; `key` makes queueing it idempotent."""

    key: str
    bank_id: str
    reference: str
    amount_fen: int


def new_account(kind: AccountKind, owner: str, flags: AccountFlags | None = None) -> Account:
    """An account of `kind` for `owner`, never-negative where DESIGN §5 says by default.

    >>> new_account(AccountKind.PERSONAL_FUND, "7").flags
    <AccountFlags.NEVER_NEGATIVE: 1>
    """
    if flags is None:
        never = kind in NEVER_NEGATIVE_BY_DEFAULT
        flags = AccountFlags.NEVER_NEGATIVE if never else AccountFlags.NONE
    return Account(account_id(kind, owner), kind, owner, flags)


def transfer_id(*parts: str | int) -> str:
    """The idempotency key of a business event: 32 hex digits from its identifying parts.

    >>> len(transfer_id("card-debit", "000000000001", 42))
    32
    >>> transfer_id("a", "bc") == transfer_id("ab", "c")
    False
    """
    text = "\x1f".join(map(str, parts))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


#: The accounts to open for a transfer that names one missing (see `Ledger.post_and_record`).
Opening = Callable[[Transfer], Sequence[Account]]


class Health(enum.Enum):
    """Whether a ledger takes writes (`Ledger.health`): the daemon is ready only on `OK`."""

    OK = "ok"
    #: Its writer (the SQLite writer process) died and is being started again: every call
    #: fails at once with `LedgerUnavailable` until it is back.
    RESTARTING = "restarting"
    #: Its writer ended for good (closed, or restarted too often): nothing more is written.
    WRITER_ENDED = "writer ended"


class LedgerUnavailable(RuntimeError):
    """The ledger cannot answer now: it is closed, or its writer died (and may be restarting:
    see `Ledger.health`). Raised at once, never after a wait for an answer that cannot come;
    a request pipeline answers it as a system malfunction (ISO 8583 response code 96).

    For a write that was in flight when its writer died the outcome is unknown: it may have
    committed (the writer commits before it answers) or not. Every write is safe to retry:
    transfers by their ids (idempotency keys), bill submissions by their bill id and request
    digest, bill transitions (a bill already in the target state is left as it is), offline
    purchases by their key, reviews and reversals by their keys."""


class Ledger(abc.ABC):
    """The narrow interface the switch and the business events use. All methods are coroutines;
    a write returns only after it is durable."""

    @abc.abstractmethod
    async def open_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]: ...

    @abc.abstractmethod
    async def close_accounts(self, ids: Sequence[str]) -> list[CloseResult]: ...

    @abc.abstractmethod
    async def post(
        self, transfers: Sequence[Transfer], *, linked: bool = False
    ) -> list[TransferResult]:
        """Post a batch; with `linked` all of it posts or none of it does."""

    @abc.abstractmethod
    async def post_and_record(
        self,
        transfers: Sequence[Transfer],
        records: Sequence[OfflineRecord] = (),
        *,
        opening: Opening | None = None,
    ) -> tuple[list[TransferResult], dict[str, int]]:
        """`post` (not linked) then `record_offline` in one round and one transaction (the
        records behind the postings): the post's results, and the balances (`Balance.balance_fen`:
        what a caller reads, and all a writer process sends back) the touched accounts that
        existed had just before it. A transfer naming an account that does not
        exist first gets the accounts ``opening`` gives for it opened (the core remembers a
        refusal for a missing account under the id, so a transfer must not meet its accounts
        missing). Records' own results are those of `record_offline`, not returned."""

    @abc.abstractmethod
    async def balances(self, ids: Sequence[str]) -> dict[str, Balance]:
        """The balances of the accounts that exist among `ids`."""

    @abc.abstractmethod
    async def all_balances(self) -> list[Balance]:
        """Every account (a cold path: day-end and tests)."""

    @abc.abstractmethod
    async def lookup_transfers(self, ids: Sequence[str]) -> dict[str, PostedTransfer]:
        """What the ledger remembers under each id (posted or refused)."""

    @abc.abstractmethod
    async def history(self, account: str, limit: int = 100) -> list[PostedTransfer]:
        """The last `limit` posted transfers touching `account`, oldest first."""

    @abc.abstractmethod
    async def add_review(self, item: ReviewItem) -> bool:
        """Record an exception for a person; False when its key was already recorded."""

    @abc.abstractmethod
    async def reviews(self) -> list[ReviewItem]: ...

    @abc.abstractmethod
    async def queue_reversal(self, item: QueuedReversal) -> bool:
        """Queue a reversal for a bank; False when its key was already queued."""

    @abc.abstractmethod
    async def queued_reversals(self) -> list[QueuedReversal]: ...

    @abc.abstractmethod
    async def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        """Keep each received record, once per (PSAM terminal number, PSAM serial): True when
        it is new, or when a verified record replaces an unverified one (a forgery seen first);
        False when that debit was already on file. A record its terminal sends again in a later
        batch (an advised debit uploaded after a new sign-on) moves to that batch, unless a
        verified record would be replaced by an unverified one."""

    @abc.abstractmethod
    async def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        """For each (application serial, purse): the verified records' (card counter, card
        date and time) on file, by counter (records without a counter left out)."""

    @abc.abstractmethod
    async def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        """The records on file for a terminal's batch, in the order received."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def health(self) -> Health:
        """Whether it takes writes now (a ledger with no writer of its own to lose: always)."""
        return Health.OK

    async def transfer(self, transfer: Transfer) -> TransferResult:
        """Post one transfer."""
        (result,) = await self.post([transfer])
        return result

    async def balance(self, account: str) -> Balance | None:
        return (await self.balances([account])).get(account)

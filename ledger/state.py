"""The pure state machine of the core: decides each transfer's result and applies it to the
accounts it was given. The in-memory model holds everything in these structures; the SQL ledgers
load only the rows a batch touches into them, decide, and write back what changed.

>>> accounts = {a.id: AccountState.opened(a) for a in (
...     new_account(AccountKind.CONTRIBUTIONS_RECEIVABLE, "u1"),
...     new_account(AccountKind.PERSONAL_FUND, "c1"))}
>>> batch = Batch(accounts, {})
>>> t = Transfer("t1", "contrib:u1", "pf:c1", 500, code=1)
>>> batch.post([t], linked=False)
[<TransferResult.CREATED: 0>]
>>> batch.post([t], linked=False)
[<TransferResult.EXISTS: 1>]
>>> accounts["pf:c1"].credits_posted_fen
500
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from ledger.core import (
    AMOUNT_FEN_MAX,
    ID_CHARS_MAX,
    REFERENCE_CHARS_MAX,
    Account,
    AccountFlags,
    AccountResult,
    Balance,
    OfflineRecord,
    Opening,
    Transfer,
    TransferResult,
    new_account,
)
from ledger.kinds import (
    ALLOWED_PAIRS,
    DEBIT_NORMAL_KINDS,
    NEVER_NEGATIVE_KINDS,
    AccountKind,
    account_id,
)

R = TransferResult


@dataclass(slots=True)
class AccountState:
    """One account's mutable row."""

    id: str
    kind: AccountKind
    owner: str
    flags: AccountFlags
    debits_posted_fen: int = 0
    credits_posted_fen: int = 0
    closed: bool = False

    @classmethod
    def opened(cls, account: Account) -> AccountState:
        return cls(account.id, account.kind, account.owner, account.flags)

    @property
    def balance_fen(self) -> int:
        """`Balance.balance_fen`, without the `Balance`."""
        if self.kind in DEBIT_NORMAL_KINDS:
            return self.debits_posted_fen - self.credits_posted_fen
        return self.credits_posted_fen - self.debits_posted_fen

    def balance(self) -> Balance:
        return Balance(
            self.id,
            self.kind,
            self.flags,
            self.debits_posted_fen,
            self.credits_posted_fen,
            self.closed,
        )


@dataclass(frozen=True, slots=True)
class Remembered:
    """A transfer id's first outcome (a posted transfer or a remembered refusal)."""

    transfer: Transfer
    result: TransferResult


def check_open(account: Account, existing: AccountState | None) -> AccountResult:
    """Decide the result of opening `account` next to what the id holds already."""
    if account.id != account_id(account.kind, account.owner):
        return AccountResult.ID_MISMATCH
    never = AccountFlags.NEVER_NEGATIVE in account.flags
    if never and account.kind not in NEVER_NEGATIVE_KINDS:
        return AccountResult.FLAGS_NOT_ALLOWED
    if existing is None:
        return AccountResult.CREATED
    same = (existing.kind, existing.owner, existing.flags) == (
        account.kind,
        account.owner,
        account.flags,
    )
    return AccountResult.EXISTS if same else AccountResult.EXISTS_WITH_DIFFERENT_DATA


def _malformed(transfer: Transfer) -> TransferResult | None:
    if not transfer.id or len(transfer.id) > ID_CHARS_MAX:
        return R.ID_INVALID
    if not 0 < transfer.amount_fen <= AMOUNT_FEN_MAX:
        return R.AMOUNT_OUT_OF_RANGE
    if transfer.debit_account_id == transfer.credit_account_id:
        return R.ACCOUNTS_MUST_BE_DIFFERENT
    if len(transfer.reference) > REFERENCE_CHARS_MAX:
        return R.REFERENCE_TOO_LONG
    return None


@dataclass(slots=True)
class Batch:
    """Decides transfers in order against `accounts` and `remembered`, mutating both.

    `written` collects the rows to persist (posted transfers and remembered refusals) and
    `dirty` the accounts whose totals changed.
    """

    accounts: MutableMapping[str, AccountState]
    remembered: MutableMapping[str, Remembered]
    written: list[Remembered] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)

    def post(self, transfers: Sequence[Transfer], *, linked: bool) -> list[TransferResult]:
        if linked:
            return self._post_linked(transfers)
        return [self._post_one(t, remember=True) for t in transfers]

    def _post_linked(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        mark = len(self.written)
        results: list[TransferResult] = []
        for transfer in transfers:
            result = self._post_one(transfer, remember=False)
            results.append(result)
            if not result.ok:
                self._undo(self.written[mark:])
                del self.written[mark:]
                failed = [R.LINKED_EVENT_FAILED] * len(transfers)
                failed[len(results) - 1] = result
                return failed
        return results

    def _undo(self, rows: Iterable[Remembered]) -> None:
        for row in rows:
            transfer = row.transfer
            del self.remembered[transfer.id]
            self.accounts[transfer.debit_account_id].debits_posted_fen -= transfer.amount_fen
            self.accounts[transfer.credit_account_id].credits_posted_fen -= transfer.amount_fen

    def _post_one(self, transfer: Transfer, *, remember: bool) -> TransferResult:
        result = _malformed(transfer)
        if result is not None:
            return result
        first = self.remembered.get(transfer.id)
        if first is not None:
            if first.transfer != transfer:
                return R.EXISTS_WITH_DIFFERENT_DATA
            return R.EXISTS if first.result is R.CREATED else first.result
        result = self._refusal(transfer)
        if result is None:
            self._apply(transfer)
            self._remember(Remembered(transfer, R.CREATED))
            return R.CREATED
        if remember:
            self._remember(Remembered(transfer, result))
        return result

    def _refusal(self, transfer: Transfer) -> TransferResult | None:
        debit = self.accounts.get(transfer.debit_account_id)
        if debit is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        credit = self.accounts.get(transfer.credit_account_id)
        if credit is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if (debit.kind, credit.kind) not in ALLOWED_PAIRS:
            return R.KINDS_NOT_ALLOWED
        if debit.closed:
            return R.DEBIT_ACCOUNT_CLOSED
        if credit.closed:
            return R.CREDIT_ACCOUNT_CLOSED
        if AccountFlags.NEVER_NEGATIVE in debit.flags:
            after = debit.credits_posted_fen - debit.debits_posted_fen - transfer.amount_fen
            if after < 0:
                return R.INSUFFICIENT_FUNDS
        return None

    def _apply(self, transfer: Transfer) -> None:
        """Move the amount; the invariants asserted where the totals change (O(1))."""
        debit = self.accounts[transfer.debit_account_id]
        credit = self.accounts[transfer.credit_account_id]
        amount_fen = transfer.amount_fen
        assert 0 < amount_fen <= AMOUNT_FEN_MAX, "an amount out of range reached the totals"
        debit.debits_posted_fen += amount_fen
        credit.credits_posted_fen += amount_fen
        assert (
            AccountFlags.NEVER_NEGATIVE not in debit.flags
            or debit.credits_posted_fen >= debit.debits_posted_fen
        ), "a never-negative account went below zero"
        self.dirty.add(transfer.debit_account_id)
        self.dirty.add(transfer.credit_account_id)

    def _remember(self, row: Remembered) -> None:
        self.remembered[row.transfer.id] = row
        self.written.append(row)


def before_and_missing(
    accounts: Mapping[str, AccountState], transfers: Sequence[Transfer], opening: Opening | None
) -> tuple[dict[str, int], list[Account]]:
    """For :meth:`ledger.core.Ledger.post_and_record` (every ledger): the balances of the
    touched accounts in ``accounts`` (those that exist) before the post, and the accounts
    ``opening`` gives for the transfers naming one not there, once each. The SQL ledgers then
    load those that exist (:func:`open_missing` needs them) before opening the rest."""
    before: dict[str, int] = {}
    wanted: dict[str, Account] = {}
    for transfer in transfers:
        found = 0
        for touched in (transfer.debit_account_id, transfer.credit_account_id):
            state = accounts.get(touched)
            if state is not None:
                found += 1
                if touched not in before:
                    before[touched] = state.balance_fen
        if found < 2 and opening is not None:
            for account in opening(transfer):
                wanted.setdefault(account.id, account)
    return before, list(wanted.values())


def open_missing(
    accounts: MutableMapping[str, AccountState], wanted: Sequence[Account]
) -> list[Account]:
    """Open (into ``accounts``, which holds every one of ``wanted`` that exists) the accounts
    of ``wanted`` that do not exist; returns them, for the SQL ledgers to insert. One that
    cannot be opened (an id not its kind's and owner's) stays missing: its transfer is
    refused."""
    opened = []
    for account in wanted:
        if check_open(account, accounts.get(account.id)) is AccountResult.CREATED:
            accounts[account.id] = AccountState.opened(account)
            opened.append(account)
    return opened


def needed_ids(transfers: Iterable[Transfer]) -> tuple[set[str], set[str]]:
    """The transfer ids and account ids a batch must load before it is decided."""
    ids: set[str] = set()
    accounts: set[str] = set()
    for transfer in transfers:
        ids.add(transfer.id)
        accounts.add(transfer.debit_account_id)
        accounts.add(transfer.credit_account_id)
    return ids, accounts


Held = tuple[bool, str, int]  # a debit on file: verified, its terminal, its batch


def offline_decision(held: Held | None, record: OfflineRecord) -> tuple[bool, bool]:
    """(new, write) for a received record next to what is on file (shared by every ledger):
    new when the debit is not on file or a verified record replaces an unverified one; written
    then, and also when its terminal sends it again in a later batch (moved there), never a
    verified record replaced by an unverified one.

    >>> row = OfflineRecord("000000000001", 1, "P1", 2, "31", "ED", 250, "00", "2026", "t")
    >>> offline_decision(None, row), offline_decision((True, "P1", 1), row)
    ((True, True), (False, True))
    >>> offline_decision((True, "P1", 2), row), offline_decision((True, "P2", 1), row)
    ((False, False), (False, False))
    """
    if held is None:
        return True, True
    verified, terminal, batch = held
    mine = record.transfer_id is not None
    if mine and not verified:
        return True, True
    moved = terminal == record.terminal_id and batch != record.batch_no
    return False, moved and (mine or not verified)


__all__ = [
    "AccountState",
    "Batch",
    "Held",
    "Remembered",
    "before_and_missing",
    "check_open",
    "needed_ids",
    "new_account",
    "offline_decision",
    "open_missing",
]

"""The arguments of a PostgreSQL group commit's one write (``ledger.pg_post``), inside the
batch's transaction (:data:`ledger.pg_batch_sql.WRITE`) or with none open
(:data:`ledger.pg_batch_sql.WRITE_FREE`).

With none open, a batch is two round trips and holds no lock across the network: its read
locks nothing (one snapshot), Python decides, and its write is one statement, a transaction of
its own, durable before it answers, that applies the decision only if what it was made on still
holds — each account the batch decided on (a card's, a cardholder's, a never-negative one)
moved only from the totals it read, or unmoved still as read (its totals only grow, so equal
totals are an unchanged account; locked ``FOR SHARE`` to the commit), each transfer id still
new (else a unique violation), each offline record still not on file, each folded call's row
still in the state it was decided on (``ledger.pg_fold``) — and otherwise fails with a
serialization failure (``ledger_conflict``, migration 0016): nothing of it written, the batch
runs again from a fresh read. The read and the write's checked parts are functions whose
plans are kept for the session (migration 0017), not made again for each batch. The shared
accounts (``ledger.kinds.SHARED_KINDS``) move by delta as in a transaction: no decision reads
their totals. So nothing waits on the daemon with a row locked: no "idle in transaction", no
BEGIN or COMMIT round trip. A batch that needs more (an account to open, a call that does not
fold, an offline record already on file, any job other than postings, calls and reads) runs in
a transaction as before (``NeedsTransaction``).

A batch reads only the accounts its writer does not know, and one whose writer knows everything it
decides on runs with no read at all, one round trip (:class:`Known`): the accounts as the writer's
last batches left them, the bills as its process last read or moved them (``remembered`` in
``ledger.pg_fold.Fold.decide``), its transfer ids taken as new and its offline records as not on
file. That is a hint, never trusted unchecked: the write checks every account decided on against
the totals the decision used and every bill's move against the state it was decided from; an id
taken is a unique violation and a record on file fails the inserts' count, so a stale hint fails
the write (nothing of it written) and the batch runs again in a transaction from a locked read, the
writer's knowledge forgotten. A decision the write would not check (a bill's refusal, a transition
with no effect, a linked refusal of ids taken as new: nothing inserted) is never made from memory:
the batch is then decided from a read; and one on recalled accounts that writes nothing still
sends its write, which checks them. A shared
account's totals are the writer's own view (another process's deltas unseen): no decision reads
them (a never-negative one is never recalled), only the balances reported before a posting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ledger import sql_rows as rows
from ledger.core import AccountFlags, OfflineRecord, TransferResult
from ledger.kinds import is_shared
from ledger.sqlite_offline import offline_row
from ledger.state import AccountState, Batch, offline_decision

OFFLINE_WIDTH = 11  # the record's columns in the write (received_at_us is one value)
Totals = tuple[int, int, bool]  # an account as the batch read it: debits, credits, closed
Held = dict[tuple[str, int], tuple[bool, str, int]]  # (psam, serial): (posted, terminal, batch)


KNOWN_MAX = 65536  # accounts one writer remembers (oldest out first)


class Known:
    """The accounts as one writer's last batches left them (see the module): a hint the write
    checks, forgotten whenever a batch of the writer fails, and before one runs in a transaction
    (learnt again once it commits).

    >>> from ledger.core import AccountKind
    >>> known = Known(2)
    >>> known.learn([AccountState("ed:1", AccountKind.CARD_ED_SHADOW, "o", AccountFlags(0), 5, 0)])
    >>> copies, _ = known.recall(["ed:1"]); copies["ed:1"].debits_posted_fen += 1
    >>> copies, unknown = known.recall(["ed:1", "ed:2"])
    >>> copies["ed:1"].debits_posted_fen, unknown
    (5, ['ed:2'])
    """

    __slots__ = ("_accounts", "_size_max", "_staged")

    def __init__(self, size_max: int = KNOWN_MAX) -> None:
        self._accounts: dict[str, AccountState] = {}
        self._staged: list[AccountState] = []
        self._size_max = size_max

    def recall(self, ids: Iterable[str]) -> tuple[dict[str, AccountState], list[str]]:
        """Copies of the accounts of ``ids`` (a batch's to decide on) it knows, and the others
        (a shared never-negative one among them, known or not: its batch needs a
        transaction)."""
        copies: dict[str, AccountState] = {}
        unknown: list[str] = []
        for account in ids:
            state = self._accounts.get(account)
            if state is None or (AccountFlags.NEVER_NEGATIVE in state.flags and is_shared(account)):
                unknown.append(account)
                continue
            copies[account] = AccountState(
                state.id,
                state.kind,
                state.owner,
                state.flags,
                state.debits_posted_fen,
                state.credits_posted_fen,
                state.closed,
            )
        return copies, unknown

    def learn(self, states: Iterable[AccountState], *, staged: bool = False) -> None:
        """The accounts as a batch that has committed left them (kept, not copied: the batch
        is done with them); ``staged``: a batch in a transaction not yet committed, learnt by
        :meth:`commit`."""
        if staged:
            self._staged.extend(states)
            return
        accounts = self._accounts
        for state in states:
            accounts.pop(state.id, None)
            accounts[state.id] = state
        while len(accounts) > self._size_max:
            del accounts[next(iter(accounts))]

    def commit(self) -> None:
        """The staged accounts learnt: their transaction has committed."""
        staged, self._staged = self._staged, []
        self.learn(staged)

    def forget(self) -> None:
        self._accounts.clear()
        self._staged.clear()


def deltas(batch: Batch) -> dict[str, list[int]]:
    """Each account's net move in the batch (debits, credits), from the transfers it posts, in
    id order."""
    moved: dict[str, list[int]] = {}
    for row in batch.written:
        if row.result is TransferResult.CREATED:
            transfer = row.transfer
            moved.setdefault(transfer.debit_account_id, [0, 0])[0] += transfer.amount_fen
            moved.setdefault(transfer.credit_account_id, [0, 0])[1] += transfer.amount_fen
    return dict(sorted(moved.items()))


def write_arguments(batch: Batch, changed: dict[str, list[int]], offline: list[Any]) -> list[Any]:
    """:data:`ledger.pg_batch_sql.WRITE`'s 23 parameters."""
    at_us = rows.now_us()
    written = [rows.transfer_row(r, at_us) for r in batch.written]
    return [
        *columns(written, 8),
        list(changed),
        [d for d, _ in changed.values()],
        [c for _, c in changed.values()],
        *columns(offline, OFFLINE_WIDTH),
        at_us,
    ]


def free_arguments(
    batch: Batch,
    changed: dict[str, list[int]],
    offline: list[Any],
    checked: Mapping[str, Totals],
) -> list[Any]:
    """:data:`ledger.pg_batch_sql.WRITE_FREE`'s 32 parameters: ``checked``, the accounts the
    batch decided on as it read them (the shared ones, moved by delta, are not in it); every
    offline record is new (read as not on file).

    >>> from ledger.state import Batch
    >>> args = free_arguments(Batch({}, {}), {"a": [5, 0], "p": [0, 5]}, [], {"a": (9, 20, False),
    ...     "b": (1, 2, False)})
    >>> args[8:17], args[29:]
    ([['a', 'p'], [5, 0], [0, 5], [9, None], [20, None], ['b'], [1], [2], [False]], [2, 1, 0])
    """
    at_us = rows.now_us()
    written = [rows.transfer_row(r, at_us) for r in batch.written]
    before = [checked.get(account) for account in changed]
    still = [account for account in sorted(checked) if account not in changed]
    return [
        *columns(written, 8),
        list(changed),
        [d for d, _ in changed.values()],
        [c for _, c in changed.values()],
        [None if b is None else b[0] for b in before],
        [None if b is None else b[1] for b in before],
        still,
        [checked[a][0] for a in still],
        [checked[a][1] for a in still],
        [checked[a][2] for a in still],
        *columns(offline, OFFLINE_WIDTH),
        at_us,
        len(changed),
        len(still),
        len(offline),
    ]


def columns(table: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The columns of ``table`` (``width`` empty lists when it has no rows).

    >>> columns([(1, "a"), (2, "b")], 2), columns([], 2)
    ([[1, 2], ['a', 'b']], [[], []])
    """
    if not table:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*table, strict=True)]


def decide_offline(held: Held, records: Sequence[OfflineRecord]) -> tuple[list[bool], list[Any]]:
    """Each record's result in order (``offline_decision``, as every ledger) and the rows to
    write: a debit written twice is written once, where it was first written, with its last
    values. ``held`` follows the decisions."""
    results, writes = [], {}
    for record in records:
        key = (record.psam_terminal_no, record.psam_serial)
        new, write = offline_decision(held.get(key), record)
        if write:
            held[key] = (record.transfer_id is not None, record.terminal_id, record.batch_no)
            writes[key] = record  # a dict keeps the first position, takes the last value
        results.append(new)
    return results, [offline_row(r) for r in writes.values()]


def held_of(found: Sequence[Any] | None) -> Held:
    return {(r[0], int(r[1])): (bool(r[2]), r[3], int(r[4])) for r in found or ()}

"""A group commit's postings on PostgreSQL in two statements, however many jobs it holds.

Every ``post`` and ``post_and_record`` of the writer's batch is decided together:

1. one read — the touched accounts locked in id order (``FOR UPDATE``), the transfer ids already
   remembered, and the offline records the batch's jobs carry that are on file (locked too), as
   three arrays of one row;
2. the decision in Python, by the same pure state machine as every ledger (``ledger.state``),
   and of the offline records by ``offline_decision``, in job order;
3. one write — the new transfers (``unnest``), each touched account's totals once (however many
   transfers hit it: a hot account such as the pooled fund or a payable is one row update per
   commit) and the offline records (an upsert), as data-modifying CTEs of one statement.

An account opened by a ``post_and_record`` (the first time a card is seen) is inserted by a
statement of its own before the write (rare; the write's UPDATE must see it).

asyncpg prepares each statement once per connection (its statement cache) — every batch uses
the same three shapes whatever its size, the values travelling as arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

from ledger import sql_rows as rows
from ledger.core import Account, OfflineRecord
from ledger.sqlite_offline import offline_row
from ledger.state import (
    AccountState,
    Batch,
    before_and_missing,
    needed_ids,
    offline_decision,
    open_missing,
)

POSTS = frozenset({"post", "post_and_record"})  # the job kinds decided here

_READ = (
    "SELECT"
    " (SELECT array_agg(ROW(l.id, l.kind, l.owner, l.flags, l.debits_posted, l.credits_posted,"
    "   l.closed) ORDER BY l.id) FROM (SELECT id, kind, owner, flags, debits_posted,"
    "   credits_posted, closed FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)"
    "   AS l),"
    " (SELECT array_agg(ROW(t.id, t.debit_account_id, t.credit_account_id, t.amount_fen, t.code,"
    "   t.reference, t.result)) FROM transfers AS t WHERE t.id = ANY($2::text[])),"
    " (SELECT array_agg(ROW(h.psam_terminal_no, h.psam_serial, h.posted, h.terminal_id,"
    "   h.batch_no)) FROM (SELECT o.psam_terminal_no, o.psam_serial,"
    "   o.transfer_id IS NOT NULL AS posted, o.terminal_id, o.batch_no FROM offline_records AS o"
    "   JOIN unnest($3::text[], $4::bigint[]) AS k(p, s)"
    "   ON o.psam_terminal_no = k.p AND o.psam_serial = k.s"
    "   ORDER BY o.psam_terminal_no, o.psam_serial FOR UPDATE OF o) AS h)"
)
_WRITE = (
    "WITH t AS (INSERT INTO transfers (id, debit_account_id, credit_account_id, amount_fen, code,"
    " reference, result, posted_at_us) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::bigint[], $5::int[], $6::text[], $7::smallint[], $8::bigint[])),"
    " a AS (UPDATE accounts AS a SET debits_posted = u.d, credits_posted = u.c"
    " FROM unnest($9::text[], $10::bigint[], $11::bigint[]) AS u(id, d, c) WHERE a.id = u.id),"
    " o AS (INSERT INTO offline_records (psam_terminal_no, psam_serial, terminal_id, batch_no,"
    " application_serial, purse, amount_fen, tac, card_datetime, transfer_id, card_counter,"
    " received_at_us) SELECT u.p, u.s, u.t, u.b, u.a, u.pu, u.am, u.tac, u.cd, u.tid, u.cc, $23"
    " FROM unnest($12::text[], $13::bigint[], $14::text[], $15::int[], $16::text[], $17::text[],"
    " $18::bigint[], $19::text[], $20::text[], $21::text[], $22::int[])"
    " WITH ORDINALITY AS u(p, s, t, b, a, pu, am, tac, cd, tid, cc, n) ORDER BY u.n"
    " ON CONFLICT (psam_terminal_no, psam_serial) DO UPDATE SET"
    " terminal_id = excluded.terminal_id, batch_no = excluded.batch_no,"
    " application_serial = excluded.application_serial, purse = excluded.purse,"
    " amount_fen = excluded.amount_fen, tac = excluded.tac,"
    " card_datetime = excluded.card_datetime, transfer_id = excluded.transfer_id,"
    " card_counter = excluded.card_counter, received_at_us = excluded.received_at_us)"
    " SELECT 1"
)
INSERT_ACCOUNTS = (
    "INSERT INTO accounts (id, kind, owner, flags, debits_posted, credits_posted, closed)"
    " SELECT u.id, u.kind, u.owner, u.flags, 0, 0, false"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS u(id, kind, owner, flags)"
)
LOCK_ACCOUNTS = (
    f"SELECT {rows.ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
)
_OFFLINE_WIDTH = 11  # the record's columns in the write (received_at_us is one value)
Held = dict[tuple[str, int], tuple[bool, str, int]]  # (psam, serial): (posted, terminal, batch)


class Job(Protocol):
    kind: str
    args: tuple[Any, ...]
    value: Any


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


async def post_jobs(connection: asyncpg.Connection, jobs: Sequence[Job]) -> None:
    """Decide and write every posting job of a batch (see the module); each job's ``value``
    set to what its caller gets. The records of each ``post_and_record`` are decided behind
    all the postings, in job order."""
    ids, account_ids = needed_ids(t for job in jobs for t in job.args[0])
    records = [r for job in jobs if job.kind == "post_and_record" for r in job.args[1]]
    keys = list(dict.fromkeys((r.psam_terminal_no, r.psam_serial) for r in records))
    locked, known, on_file = await connection.fetchrow(
        _READ, sorted(account_ids), sorted(ids), [k[0] for k in keys], [k[1] for k in keys]
    )
    accounts = {row[0]: rows.account_state(row) for row in locked or ()}
    batch = Batch(accounts, {row[0]: rows.remembered(row) for row in known or ()})
    opened: list[Account] = []
    for job in jobs:
        if job.kind == "post":
            transfers, linked = job.args
            job.value = batch.post(transfers, linked=linked)
        else:
            transfers, _, opening = job.args
            before, wanted = before_and_missing(batch.accounts, transfers, opening)
            if wanted:  # those that exist, for open_missing to see (locked too)
                unseen = sorted(a.id for a in wanted if a.id not in batch.accounts)
                found = await connection.fetch(LOCK_ACCOUNTS, unseen)
                batch.accounts.update({r[0]: rows.account_state(r) for r in found})
                opened += open_missing(batch.accounts, wanted)
            job.value = (batch.post(transfers, linked=False), before)
    if opened:  # a concurrent process opening one too: a unique violation, retried
        await connection.execute(
            INSERT_ACCOUNTS,
            [a.id for a in opened],
            [a.kind.value for a in opened],
            [a.owner for a in opened],
            [int(a.flags) for a in opened],
        )
    _, offline = decide_offline(held_of(on_file), records)
    if batch.written or offline:
        await connection.execute(_WRITE, *_write_arguments(batch, offline))


def _write_arguments(batch: Batch, offline: list[Any]) -> list[Any]:
    at_us = rows.now_us()
    written = [rows.transfer_row(r, at_us) for r in batch.written]
    changed: list[AccountState] = [batch.accounts[a] for a in sorted(batch.dirty)]
    return [
        *_columns(written, 8),
        [a.id for a in changed],
        [a.debits_posted_fen for a in changed],
        [a.credits_posted_fen for a in changed],
        *_columns(offline, _OFFLINE_WIDTH),
        at_us,
    ]


def _columns(table: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The columns of ``table`` (``width`` empty lists when it has no rows).

    >>> _columns([(1, "a"), (2, "b")], 2), _columns([], 2)
    ([[1, 2], ['a', 'b']], [[], []])
    """
    if not table:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*table, strict=True)]

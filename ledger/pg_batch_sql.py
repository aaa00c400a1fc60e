"""The statements of a PostgreSQL group commit's postings (``ledger.pg_post``): the batch's one
read, its one write, and the two rarer ones (accounts opened, accounts and transfer ids read
after the read). Each is prepared once per connection (asyncpg's statement cache), its values
travelling as arrays whatever the batch's size."""

from __future__ import annotations

from ledger import sql_rows as rows
from ledger.core import AccountFlags

NEVER = int(AccountFlags.NEVER_NEGATIVE)
ACCOUNT_ROW = "ROW(l.id, l.kind, l.owner, l.flags, l.debits_posted, l.credits_posted, l.closed)"


def read_sql(*, lock: bool) -> str:
    """The batch's read: $1 the accounts it decides on (one card's or cardholder's), $2 the
    transfer ids, $3/$4 the offline records' keys, $5 the shared accounts (read apart, unless
    one is never-negative: then it is read with the others, in id order); the folds' after.
    ``lock``: inside the batch's transaction, the first ones and the records locked (``FOR
    UPDATE``); without one (``ledger.pg_write``), nothing locked: the write checks them, and
    the four reads are a function with kept plans (migration 0017), in the statement's
    snapshot."""
    if not lock:
        return (
            "WITH r AS MATERIALIZED (SELECT * FROM ledger_batch_read($1::text[], $2::text[],"
            " $3::text[], $4::bigint[], $5::text[]))"
            " SELECT (SELECT accounts FROM r), (SELECT transfers FROM r), (SELECT held FROM r),"
            " (SELECT shared FROM r)"
        )
    return (
        "SELECT"
        f" (SELECT array_agg({ACCOUNT_ROW} ORDER BY l.id) FROM (SELECT {rows.ACCOUNT_COLUMNS}"
        f"   FROM accounts WHERE id = ANY($1::text[]) OR (id = ANY($5::text[]) AND flags & {NEVER}"
        "   <> 0) ORDER BY id FOR UPDATE) AS l),"
        " (SELECT array_agg(ROW(t.id, t.debit_account_id, t.credit_account_id, t.amount_fen,"
        "   t.code, t.reference, t.result)) FROM transfers AS t WHERE t.id = ANY($2::text[])),"
        " (SELECT array_agg(ROW(h.psam_terminal_no, h.psam_serial, h.posted, h.terminal_id,"
        "   h.batch_no)) FROM (SELECT o.psam_terminal_no, o.psam_serial,"
        "   o.transfer_id IS NOT NULL AS posted, o.terminal_id, o.batch_no FROM offline_records"
        "   AS o JOIN unnest($3::text[], $4::bigint[]) AS k(p, s)"
        "   ON o.psam_terminal_no = k.p AND o.psam_serial = k.s"
        "   ORDER BY o.psam_terminal_no, o.psam_serial FOR UPDATE OF o) AS h),"
        f" (SELECT array_agg({ACCOUNT_ROW}) FROM accounts AS l WHERE l.id = ANY($5::text[])"
        f"   AND l.flags & {NEVER} = 0)"
    )


READ = read_sql(lock=True)


def upsert_offline(first: int) -> str:
    """The offline records' upsert, its eleven arrays and the receipt time numbered from
    ``$first`` (on its own, or as a CTE of the batch's write)."""
    return insert_offline(first) + (
        " ON CONFLICT (psam_terminal_no, psam_serial) DO UPDATE SET"
        " terminal_id = excluded.terminal_id, batch_no = excluded.batch_no,"
        " application_serial = excluded.application_serial, purse = excluded.purse,"
        " amount_fen = excluded.amount_fen, tac = excluded.tac,"
        " card_datetime = excluded.card_datetime, transfer_id = excluded.transfer_id,"
        " card_counter = excluded.card_counter, received_at_us = excluded.received_at_us"
    )


def insert_offline(first: int) -> str:
    n = [f"${first + i}" for i in range(12)]
    return (
        "INSERT INTO offline_records (psam_terminal_no, psam_serial, terminal_id, batch_no,"
        " application_serial, purse, amount_fen, tac, card_datetime, transfer_id, card_counter,"
        f" received_at_us) SELECT u.p, u.s, u.t, u.b, u.a, u.pu, u.am, u.tac, u.cd, u.tid, u.cc,"
        f" {n[11]} FROM unnest({n[0]}::text[], {n[1]}::bigint[], {n[2]}::text[], {n[3]}::int[],"
        f" {n[4]}::text[], {n[5]}::text[], {n[6]}::bigint[], {n[7]}::text[], {n[8]}::text[],"
        f" {n[9]}::text[], {n[10]}::int[])"
        " WITH ORDINALITY AS u(p, s, t, b, a, pu, am, tac, cd, tid, cc, n) ORDER BY u.n"
    )


#: The batch's write: its transfers, each touched account's totals moved by the batch's net
#: delta (``x = x + delta``: a shared account is locked only here, to the commit, never across
#: the batch's read and decision; in id order; a closed one not updated, and the batch then
#: runs again), its offline records; the folds' CTEs after (``ledger.pg_fold.statements``).
WRITE = (
    "WITH t AS (INSERT INTO transfers (id, debit_account_id, credit_account_id, amount_fen, code,"
    " reference, result, posted_at_us) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::bigint[], $5::int[], $6::text[], $7::smallint[], $8::bigint[])),"
    " a AS (UPDATE accounts AS a SET debits_posted = a.debits_posted + u.d,"
    " credits_posted = a.credits_posted + u.c FROM (SELECT * FROM unnest($9::text[],"
    " $10::bigint[], $11::bigint[]) AS v(id, d, c) ORDER BY v.id) AS u"
    " WHERE a.id = u.id AND NOT a.closed RETURNING a.id),"
    f" o AS ({upsert_offline(12)})"
)
#: The write of a batch read with no transaction open (``ledger.pg_write``), one statement and
#: its own transaction: as :data:`WRITE`, and it checks what the batch decided on — each account
#: it decided on moved only from the totals it read ($12/$13; null for a shared one, moved by
#: delta) or, unmoved, still as read ($14-$17, locked ``FOR SHARE`` to the commit), each
#: offline record inserted only if still not on file — its answer ``ledger_conflict`` of the
#: counts against $30-$32 and of the folds' moves, which fails the statement (nothing of it
#: written) when anything changed. Totals only grow, so equal totals are an unchanged account.
#: The answer runs the parts in turn, in the order a batch in a transaction takes its locks
#: (the accounts, the card's then the shared ones, then the people's: the folds' moves, a
#: submission after the write), then the inserts: a write that locked a person first and then
#: waited for a payable would deadlock with a batch holding that payable and locking the person.
#: The accounts' part and the inserts are functions with kept plans (migration 0017), as are
#: the bills' fold's moves (0018): only the statement's calls of them are planned for each batch.
WRITE_FREE = (
    "WITH a AS MATERIALIZED (SELECT ledger_batch_accounts($9::text[], $10::bigint[],"
    " $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::bigint[], $16::bigint[],"
    " $17::boolean[], $30::int, $31::int) AS ok),"
    " o AS MATERIALIZED (SELECT ledger_batch_inserts($1::text[], $2::text[], $3::text[],"
    " $4::bigint[], $5::int[], $6::text[], $7::smallint[], $8::bigint[], $18::text[],"
    " $19::bigint[], $20::text[], $21::int[], $22::text[], $23::text[], $24::bigint[],"
    " $25::text[], $26::text[], $27::text[], $28::int[], $29::bigint, $32::int) AS ok)"
)
WRITE_FREE_ANSWER = (  # in the order it runs: the accounts, the people (the folds), the inserts
    "SELECT ledger_conflict((SELECT ok FROM a) AND {moved} AND (SELECT ok FROM o))"
)
WRITE_FREE_PARAMETERS = 32

INSERT_ACCOUNTS = (
    "INSERT INTO accounts (id, kind, owner, flags, debits_posted, credits_posted, closed)"
    " SELECT u.id, u.kind, u.owner, u.flags, 0, 0, false"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS u(id, kind, owner, flags)"
)


def load_sql(*, lock: bool) -> str:
    """Accounts read after the batch's read (opened now, or named by a call's postings): $1
    those it decides on, $2 the shared ones (as in :func:`read_sql`)."""
    held = " FOR UPDATE" if lock else ""
    return (
        "SELECT"
        f" (SELECT array_agg({ACCOUNT_ROW} ORDER BY l.id) FROM (SELECT {rows.ACCOUNT_COLUMNS}"
        f"   FROM accounts WHERE id = ANY($1::text[]) OR (id = ANY($2::text[]) AND flags & {NEVER}"
        f"   <> 0) ORDER BY id{held}) AS l),"
        f" (SELECT array_agg({ACCOUNT_ROW}) FROM accounts AS l WHERE l.id = ANY($2::text[])"
        f"   AND l.flags & {NEVER} = 0)"
    )


LOAD = load_sql(lock=True)
REMEMBERED = f"SELECT {rows.TRANSFER_COLUMNS} FROM transfers WHERE id = ANY($1::text[])"

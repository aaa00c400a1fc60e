"""The PostgreSQL ledger's batch with no transaction open (``ledger.pg_write``): its read and
the checked parts of its write (``ledger.pg_batch_sql``) as three functions whose plans are
kept: made once per session, not once per batch. The daemon's sessions plan every statement
afresh (``plan_cache_mode = force_custom_plan``: a generic plan made on a small table goes on
scanning it once it is large); planning the batch's read and write was some 0.7 ms of the
backend's CPU per batch, more than a small batch's statements do. These statements are key
lookups and set-based writes from arrays, so each function keeps one generic plan, made with
scans and hash or merge joins ruled out (``enable_*``): its plan is the same index lookups
whatever the tables' size when it is made (made again when a table's statistics change).

- ``ledger_batch_read``: the batch's four reads (``read_sql``), nothing locked, in the calling
  statement's snapshot (stable); its rows typed (``ledger_*_row``: a function cannot return
  arrays of anonymous rows) with the fields of the statement's rows, in their order.
- ``ledger_batch_accounts``: the accounts the batch decided on and did not move, locked
  ``FOR SHARE`` in id order only if still as read; then each touched account moved by the
  batch's net delta, only from the totals read (null: a shared account, moved by delta), never
  a closed one. True when every one held.
- ``ledger_batch_inserts``: the batch's transfers (a unique violation if an id is taken
  meanwhile), and its offline records, each inserted only if still not on file. True when
  every record was inserted.

The write calls them in the order a batch in a transaction takes its locks (the accounts, then
the people's through the folded calls, then the inserts) and fails through ``ledger_conflict``
(0016) when one answers false. Each statement in them runs with its own snapshot (they are
volatile), as the rows they change are rechecked at their latest version anyway (``UPDATE``,
``FOR SHARE``). Nothing on SQLite.

Revision ID: 0017_ledger_plans
Revises: 0016_ledger_conflict
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0017_ledger_plans"
down_revision = "0016_ledger_conflict"
branch_labels = None
depends_on = None

NEVER = 1  # AccountFlags.NEVER_NEGATIVE, as when this revision was written
#: Kept generic plans, and only index lookups and nested loops in them.
_PLANNED = (
    "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off"
    " SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off"
)

#: The rows of the read's arrays, as the batch's read in one statement returns them
#: (``ledger.pg_batch_sql.read_sql``): an account, a transfer id already taken, an offline record
#: on file.
_TYPES = (
    "CREATE TYPE ledger_account_row AS (id text, kind text, owner text, flags int,"
    " debits_posted bigint, credits_posted bigint, closed boolean)",
    "CREATE TYPE ledger_transfer_row AS (id text, debit_account_id text,"
    " credit_account_id text, amount_fen bigint, code int, reference text, result smallint)",
    "CREATE TYPE ledger_offline_row AS (psam_terminal_no text, psam_serial bigint,"
    " posted boolean, terminal_id text, batch_no int)",
)

_READ = f"""
CREATE FUNCTION ledger_batch_read(
    p_accounts text[], p_transfers text[], p_psams text[], p_serials bigint[], p_shared text[],
    OUT accounts ledger_account_row[], OUT transfers ledger_transfer_row[],
    OUT held ledger_offline_row[], OUT shared ledger_account_row[]
)
LANGUAGE plpgsql STABLE {_PLANNED} AS $$
BEGIN
    SELECT array_agg(ROW(a.id, a.kind, a.owner, a.flags, a.debits_posted, a.credits_posted,
        a.closed)::ledger_account_row ORDER BY a.id) INTO accounts
    FROM accounts AS a WHERE a.id = ANY(p_accounts || p_shared)
        AND (a.id = ANY(p_accounts) OR a.flags & {NEVER} <> 0);
    SELECT array_agg(ROW(t.id, t.debit_account_id, t.credit_account_id, t.amount_fen, t.code,
        t.reference, t.result)::ledger_transfer_row) INTO transfers
    FROM transfers AS t WHERE t.id = ANY(p_transfers);
    SELECT array_agg(ROW(o.psam_terminal_no, o.psam_serial, o.transfer_id IS NOT NULL,
        o.terminal_id, o.batch_no)::ledger_offline_row
        ORDER BY o.psam_terminal_no, o.psam_serial) INTO held
    FROM offline_records AS o JOIN unnest(p_psams, p_serials) AS k(p, s)
        ON o.psam_terminal_no = k.p AND o.psam_serial = k.s;
    SELECT array_agg(ROW(a.id, a.kind, a.owner, a.flags, a.debits_posted, a.credits_posted,
        a.closed)::ledger_account_row) INTO shared
    FROM accounts AS a WHERE a.id = ANY(p_shared) AND a.flags & {NEVER} = 0;
END $$
"""

_ACCOUNTS = f"""
CREATE FUNCTION ledger_batch_accounts(
    p_moved text[], p_debits bigint[], p_credits bigint[],
    p_read_debits bigint[], p_read_credits bigint[],
    p_still text[], p_still_debits bigint[], p_still_credits bigint[], p_still_closed boolean[],
    p_moved_count int, p_still_count int
) RETURNS boolean
LANGUAGE plpgsql {_PLANNED} AS $$
DECLARE
    v_still int;
    v_moved int;
BEGIN
    SELECT count(*) INTO v_still FROM (
        SELECT a.id FROM accounts AS a
        JOIN unnest(p_still, p_still_debits, p_still_credits, p_still_closed) AS k(id, od, oc, cl)
          ON a.id = k.id
        WHERE a.debits_posted = k.od AND a.credits_posted = k.oc AND a.closed = k.cl
        ORDER BY a.id FOR SHARE OF a) AS s;
    IF v_still <> p_still_count THEN
        RETURN false;
    END IF;
    WITH m AS (
        UPDATE accounts AS a SET debits_posted = a.debits_posted + u.d,
            credits_posted = a.credits_posted + u.c
        FROM (SELECT * FROM unnest(p_moved, p_debits, p_credits, p_read_debits, p_read_credits)
              AS v(id, d, c, od, oc) ORDER BY v.id) AS u
        WHERE a.id = u.id AND NOT a.closed
          AND (u.od IS NULL OR (a.debits_posted = u.od AND a.credits_posted = u.oc))
        RETURNING a.id)
    SELECT count(*) INTO v_moved FROM m;
    RETURN v_moved = p_moved_count;
END $$
"""

_INSERTS = f"""
CREATE FUNCTION ledger_batch_inserts(
    p_id text[], p_debit text[], p_credit text[], p_amount bigint[], p_code int[],
    p_reference text[], p_result smallint[], p_posted_at bigint[],
    p_psam text[], p_serial bigint[], p_terminal text[], p_batch int[], p_application text[],
    p_purse text[], p_amount_fen bigint[], p_tac text[], p_card_datetime text[],
    p_transfer text[], p_counter int[], p_received_at bigint, p_offline_count int
) RETURNS boolean
LANGUAGE plpgsql {_PLANNED} AS $$
DECLARE
    v_inserted int;
BEGIN
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount_fen, code,
        reference, result, posted_at_us)
    SELECT * FROM unnest(p_id, p_debit, p_credit, p_amount, p_code, p_reference, p_result,
        p_posted_at);
    WITH o AS (
        INSERT INTO offline_records (psam_terminal_no, psam_serial, terminal_id, batch_no,
            application_serial, purse, amount_fen, tac, card_datetime, transfer_id,
            card_counter, received_at_us)
        SELECT u.p, u.s, u.t, u.b, u.a, u.pu, u.am, u.tac, u.cd, u.tid, u.cc, p_received_at
        FROM unnest(p_psam, p_serial, p_terminal, p_batch, p_application, p_purse,
            p_amount_fen, p_tac, p_card_datetime, p_transfer, p_counter)
            WITH ORDINALITY AS u(p, s, t, b, a, pu, am, tac, cd, tid, cc, n)
        ORDER BY u.n
        ON CONFLICT (psam_terminal_no, psam_serial) DO NOTHING RETURNING 1)
    SELECT count(*) INTO v_inserted FROM o;
    RETURN v_inserted = p_offline_count;
END $$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for statement in (*_TYPES, _READ, _ACCOUNTS, _INSERTS):
        op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION ledger_batch_accounts(text[], bigint[], bigint[], bigint[], bigint[],"
        " text[], bigint[], bigint[], boolean[], int, int)"
    )
    op.execute(
        "DROP FUNCTION ledger_batch_inserts(text[], text[], text[], bigint[], int[], text[],"
        " smallint[], bigint[], text[], bigint[], text[], int[], text[], text[], bigint[],"
        " text[], text[], text[], int[], bigint, int)"
    )
    op.execute("DROP FUNCTION ledger_batch_read(text[], text[], text[], bigint[], text[])")
    for name in ("ledger_account_row", "ledger_transfer_row", "ledger_offline_row"):
        op.execute(f"DROP TYPE {name}")

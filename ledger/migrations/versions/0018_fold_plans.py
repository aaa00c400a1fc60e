"""The bills' part of the PostgreSQL ledger's batch (``ledger.medical.pg_batch.BillFold``) as two
functions whose plans are kept, as the batch's own parts are (0017): the daemon's sessions plan
every statement afresh (``plan_cache_mode = force_custom_plan``), and planning the bills' read
and their moves in the batch's write was most of the planning left per batch (~0.3 ms of the
backend's CPU). These are key lookups and a set-based update from arrays: each function keeps
one generic plan, made with scans and hash or merge joins ruled out, so that it is the same
index lookups whatever the tables' size when it is made.

- ``medical_bills_read``: the bills the batch's transitions decide on, nothing locked, in the
  calling statement's snapshot (stable); its rows typed (``medical_bill_row``) with the columns
  the store's decoder reads (``ledger.medical.sql_writes.BILL_COLUMNS``), in their order.
- ``medical_bills_move``: the batch's moves together, as ``medical_transition`` (0008) makes
  one: the people's locks of the moves with an effect, in person order; every bill moved only
  from the state it was decided on (a condition no index serves: a plan made on empty tables
  must not find the bills by their state, ``ix_medical_bills_state_expires_at_us``, and filter
  them by id); each person's accumulators by the sum of the effects (``sign`` times the bill's
  delta), once. True when every bill moved; false fails the batch's write
  (``ledger_conflict``, 0016, or ``BatchConflict`` in a transaction), nothing of it kept.

Nothing on SQLite.

Revision ID: 0018_fold_plans
Revises: 0017_ledger_plans
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0018_fold_plans"
down_revision = "0017_ledger_plans"
branch_labels = None
depends_on = None

PERSON_LOCK = 1835361395  # the people's advisory locks' class (0008)
_PLANNED = (
    "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off"
    " SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off"
)
_TOTALS = ("eligible_fen", "deductible_fen", "pooled_fen", "personal_account_fen", "self_pay_fen")
_NAMES = ", ".join(_TOTALS)
_DELTAS = ", ".join(f"b.d_{name}" for name in _TOTALS)
_SUMS = ", ".join(f"sum(m.sign * m.d_{name})" for name in _TOTALS)
_ADDS = ", ".join(f"{name} = a.{name} + excluded.{name}" for name in _TOTALS)

#: A bill as the store's decoder reads it (``BILL_COLUMNS`` when this revision was written).
_FIELDS = (
    ("bill_id", "varchar"),
    ("institution_id", "varchar"),
    ("his_bill_no", "varchar"),
    ("card_no", "varchar"),
    ("person_id", "varchar"),
    ("year", "int"),
    ("service_date", "date"),
    ("request_digest", "varchar"),
    ("bill_json", "text"),
    ("split_json", "text"),
    ("state", "varchar"),
    ("created_at_us", "bigint"),
    ("expires_at_us", "bigint"),
    ("updated_at_us", "bigint"),
)
_TYPE = "CREATE TYPE medical_bill_row AS (" + ", ".join(f"{n} {t}" for n, t in _FIELDS) + ")"
_ROW = ", ".join(f"b.{name}" for name, _ in _FIELDS)

_READ = f"""
CREATE FUNCTION medical_bills_read(p_bills varchar[]) RETURNS medical_bill_row[]
LANGUAGE plpgsql STABLE {_PLANNED} AS $$
DECLARE
    found medical_bill_row[];
BEGIN
    SELECT array_agg(ROW({_ROW})::medical_bill_row) INTO found
    FROM medical_bills AS b WHERE b.bill_id = ANY(p_bills);
    RETURN found;
END $$
"""

_MOVE = f"""
CREATE FUNCTION medical_bills_move(
    p_bill varchar[], p_from varchar[], p_to varchar[], p_at bigint[], p_sign int[],
    p_lock boolean[], p_person varchar[], p_year int[]
) RETURNS boolean
LANGUAGE plpgsql {_PLANNED} AS $$
DECLARE
    v_moved int;
BEGIN
    PERFORM pg_advisory_xact_lock({PERSON_LOCK}, hashtext(k.p || '/' || k.y))
    FROM (SELECT DISTINCT x.p, x.y FROM unnest(p_person, p_year, p_lock) AS x(p, y, k)
          WHERE x.k ORDER BY x.p, x.y) AS k;
    WITH m AS (
        UPDATE medical_bills AS b SET state = u.t, updated_at_us = u.n
        FROM unnest(p_bill, p_from, p_to, p_at, p_sign) AS u(b, f, t, n, s)
        WHERE b.bill_id = u.b AND b.state IS NOT DISTINCT FROM u.f  -- found by its key only
        RETURNING b.person_id, b.year, u.s AS sign, {_DELTAS}),
    a AS (
        INSERT INTO medical_accumulators AS a (person_id, year, {_NAMES})
        SELECT m.person_id, m.year, {_SUMS} FROM m WHERE m.sign <> 0
        GROUP BY m.person_id, m.year ORDER BY m.person_id, m.year
        ON CONFLICT (person_id, year) DO UPDATE SET {_ADDS},
            lock_version = a.lock_version + 1)
    SELECT count(*) INTO v_moved FROM m;
    RETURN v_moved = cardinality(p_bill);
END $$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for statement in (_TYPE, _READ, _MOVE):
        op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION medical_bills_move(varchar[], varchar[], varchar[], bigint[], int[],"
        " boolean[], varchar[], int[])"
    )
    op.execute("DROP FUNCTION medical_bills_read(varchar[])")
    op.execute("DROP TYPE medical_bill_row")

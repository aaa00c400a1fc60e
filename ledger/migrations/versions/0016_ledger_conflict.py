"""``ledger_conflict(ok)``: the PostgreSQL ledger's batch write that runs with no transaction
open (``ledger.pg_write``) checks in the same statement that what its batch decided on still
holds, and when it does not, this function fails the statement with a serialization failure
(SQLSTATE 40001), so that nothing of it is written and the batch runs again from a fresh read.
Nothing on SQLite (one writer there).

Revision ID: 0016_ledger_conflict
Revises: 0015_card_consents
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0016_ledger_conflict"
down_revision = "0015_card_consents"
branch_labels = None
depends_on = None

_CONFLICT = """
CREATE FUNCTION ledger_conflict(p_ok boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_ok IS NOT TRUE THEN
        RAISE EXCEPTION 'the batch''s reads changed before its write'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END $$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(_CONFLICT)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION ledger_conflict(boolean)")

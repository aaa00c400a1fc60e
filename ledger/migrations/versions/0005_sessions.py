"""Session state every worker shares (DESIGN §6): terminals' working keys (wrapped key blocks
under the LMK, never clear keys), counters for numbers that must never repeat (RRN, approval
code, outbound STAN) and, on PostgreSQL, a sequence for each of them.

Revision ID: 0005_sessions
Revises: 0004_card_counter
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_sessions"
down_revision = "0004_card_counter"
branch_labels = None
depends_on = None

SEQUENCES = ("medswitch_rrn", "medswitch_approval", "medswitch_stan")


def upgrade() -> None:
    op.create_table(
        "session_keys",
        sa.Column("alias", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("usage", sa.String(length=8), nullable=False),
        sa.Column("kcv", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("block", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("alias", "version", name=op.f("pk_session_keys")),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("next_value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    if op.get_context().dialect.name == "postgresql":
        for name in SEQUENCES:
            op.execute(f"CREATE SEQUENCE {name} START 1")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in SEQUENCES:
            op.execute(f"DROP SEQUENCE {name}")
    op.drop_table("counters")
    op.drop_table("session_keys")

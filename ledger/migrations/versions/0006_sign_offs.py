"""Terminals' sign-offs shared by every worker: a sign-off answered by one worker ends the
terminal's working keys (up to the MAK version it held) for all of them, until a new sign-on.

Revision ID: 0006_sign_offs
Revises: 0005_sessions
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_sign_offs"
down_revision = "0005_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_offs",
        sa.Column("terminal_id", sa.String(length=8), nullable=False),
        sa.Column("mak_version", sa.Integer(), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("terminal_id", name=op.f("pk_sign_offs")),
    )


def downgrade() -> None:
    op.drop_table("sign_offs")

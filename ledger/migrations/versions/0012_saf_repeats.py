"""Store-and-forward that never blocks (issue 20): each queued reversal keeps the F11 and F7 it
was first sent with (a repeat, 0421, carries them again), the time of its next attempt (per-item
exponential backoff, kept across a restart) and the time of its last attempt. A reversal given
up after its attempt or age limit gets the status ``review`` (and a review item).

Revision ID: 0012_saf_repeats
Revises: 0011_estate_operators
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_saf_repeats"
down_revision = "0011_estate_operators"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reversal_queue") as batch:
        batch.add_column(sa.Column("stan", sa.String(length=6), nullable=True))
        batch.add_column(sa.Column("transmitted", sa.String(length=10), nullable=True))
        batch.add_column(
            sa.Column("next_at_us", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("last_at_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reversal_queue") as batch:
        batch.drop_column("last_at_us")
        batch.drop_column("next_at_us")
        batch.drop_column("transmitted")
        batch.drop_column("stan")

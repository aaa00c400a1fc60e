"""Offline records carry the card's offline counter of the purse they debited (the counter before
the debit), so that a gap in a card's counters can be found across uploads; indexed by card.

Revision ID: 0004_card_counter
Revises: 0003_dayend
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_card_counter"
down_revision = "0003_dayend"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("offline_records") as batch:
        batch.add_column(sa.Column("card_counter", sa.Integer(), nullable=True))
    op.create_index(
        op.f("ix_offline_records_application_serial_purse"),
        "offline_records",
        ["application_serial", "purse"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_offline_records_application_serial_purse"), table_name="offline_records")
    with op.batch_alter_table("offline_records") as batch:
        batch.drop_column("card_counter")

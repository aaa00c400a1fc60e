"""The centre's copy of the card's record book (issue 24, specs/card-layout.md): ``card_visits``
keeps each visit record the centre wrote to a card — the 72 bytes the card holds, department
and ICD-10 diagnoses among them — sealed under the HSM's PERSONAL_DATA key (context
``visit|<application serial>|<bill id>``, ``key_version`` names the version), one per bill.

Revision ID: 0013_card_visits
Revises: 0012_saf_repeats
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_card_visits"
down_revision = "0012_saf_repeats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_visits",
        sa.Column("bill_id", sa.String(length=16), nullable=False),
        sa.Column("application_serial", sa.String(length=20), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.SmallInteger(), nullable=False),
        sa.Column("written_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bill_id", name=op.f("pk_card_visits")),
    )
    op.create_index(
        op.f("ix_card_visits_application_serial_written_at_us"),
        "card_visits",
        ["application_serial", "written_at_us"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_card_visits_application_serial_written_at_us"), "card_visits")
    op.drop_table("card_visits")

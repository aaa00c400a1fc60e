"""The centre's copy of the card's record book (issue 24, specs/card-layout.md): ``card_visits``
keeps each visit record the centre wrote to a card — the 72 bytes the card holds, department
and ICD-10 diagnoses among them — sealed under the HSM's PERSONAL_DATA key (context
``visit|<application serial>|<bill id>``, ``key_version`` names the version), one per bill;
``card_health`` the newest health data an authorised institution sent through the HIS API for a
person (the 92 data bytes of EF 0019, sealed for ``health|<person id>``), ``pending`` until a
card of the person has been written with it.

Revision ID: 0013_card_copies
Revises: 0012_saf_repeats
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_card_copies"
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
    op.create_table(
        "card_health",
        sa.Column("person_id", sa.String(length=20), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.SmallInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=32), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_card_health")),
    )


def downgrade() -> None:
    op.drop_table("card_health")
    op.drop_index(op.f("ix_card_visits_application_serial_written_at_us"), "card_visits")
    op.drop_table("card_visits")

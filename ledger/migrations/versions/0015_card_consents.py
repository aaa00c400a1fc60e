"""Consent windows (issue 24, specs/his-api.yaml ``GET /his/v1/cards/{card_no}/book``): a
settlement whose POS read the card's health data after the cardholder's PIN opens, for that
institution and card, 30 minutes in which the institution's HIS may read the centre's copy of
the card's record book. One row per institution and card, the newest window.

Revision ID: 0015_card_consents
Revises: 0014_health_writers
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_card_consents"
down_revision = "0014_health_writers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_consents",
        sa.Column("institution_id", sa.String(length=32), nullable=False),
        sa.Column("application_serial", sa.String(length=20), nullable=False),
        sa.Column("opened_at_us", sa.BigInteger(), nullable=False),
        sa.Column("until_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "institution_id", "application_serial", name=op.f("pk_card_consents")
        ),
    )


def downgrade() -> None:
    op.drop_table("card_consents")

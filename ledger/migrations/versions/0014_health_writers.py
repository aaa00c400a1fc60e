"""Per-institution authorisation to write cardholders' health data (issue 24,
specs/card-layout.md "Health data from an institution"): ``institutions.health_writer`` — true
or false as `medswitch institutions authorise-health|revoke-health` set it; NULL (every row
until then) means the default by kind: a hospital may, any other institution may not.

Revision ID: 0014_health_writers
Revises: 0013_card_copies
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_health_writers"
down_revision = "0013_card_copies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("institutions", sa.Column("health_writer", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("institutions") as batch:
        batch.drop_column("health_writer")

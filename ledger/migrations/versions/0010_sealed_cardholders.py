"""Cardholders' names and ID numbers sealed at rest (ledger/personal.py, hsm/personal.py):
``personal`` holds them sealed under the HSM's PERSONAL_DATA key (``personal_key_version``
names its version), ``ssn_index`` the ID number's keyed hash under the PERSONAL_INDEX key (hex;
unique: one person per ID number). The clear ``ssn`` and ``name`` become nullable: rows written
from now on leave them NULL, and rows written before are sealed (and their clear columns
emptied) by `ledger.personal.seal_clear_cardholders` — a migration cannot, the keys are the
HSM's.

Revision ID: 0010_sealed_cardholders
Revises: 0009_session_sets
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_sealed_cardholders"
down_revision = "0009_session_sets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cardholders") as batch:
        batch.add_column(sa.Column("ssn_index", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("personal", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("personal_key_version", sa.SmallInteger(), nullable=True))
        batch.alter_column("ssn", existing_type=sa.String(length=20), nullable=True)
        batch.alter_column("name", existing_type=sa.String(length=60), nullable=True)
        batch.create_unique_constraint(op.f("uq_cardholders_ssn_index"), ["ssn_index"])


def downgrade() -> None:
    with op.batch_alter_table("cardholders") as batch:
        batch.drop_constraint(op.f("uq_cardholders_ssn_index"), type_="unique")
        batch.drop_column("personal_key_version")
        batch.drop_column("personal")
        batch.drop_column("ssn_index")

"""Terminals' working-key sets with their state (specs/terminal-interface.md, sign-on): one row
per set a sign-on issued, ``pending`` until a request MACed under it arrives, then ``current``
(the set it replaces and every older pending set are deleted, their key blocks with them). A
terminal has at most one current set and a bounded number of pending ones, so the table and
``session_keys`` stay bounded however many sign-ons arrive. ``batch_no``: the batch the set
opens when it is promoted (an unproven sign-on leaves the terminal's batch alone). Supersedes
``sign_offs``: a sign-off deletes the terminal's sets.

Revision ID: 0009_session_sets
Revises: 0008_medical_person_writes
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_session_sets"
down_revision = "0008_medical_person_writes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_sets",
        sa.Column("terminal_id", sa.String(length=8), nullable=False),
        sa.Column("mak_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("mak_kcv", sa.String(length=16), nullable=False),
        sa.Column("pik_version", sa.Integer(), nullable=False),
        sa.Column("pik_kcv", sa.String(length=16), nullable=False),
        sa.Column("tdk_version", sa.Integer(), nullable=True),
        sa.Column("tdk_kcv", sa.String(length=16), nullable=True),
        sa.Column("batch_no", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("terminal_id", "mak_version", name=op.f("pk_session_sets")),
    )
    op.drop_table("sign_offs")


def downgrade() -> None:
    op.create_table(
        "sign_offs",
        sa.Column("terminal_id", sa.String(length=8), nullable=False),
        sa.Column("mak_version", sa.Integer(), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("terminal_id", name=op.f("pk_sign_offs")),
    )
    op.drop_table("session_sets")

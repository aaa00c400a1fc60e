"""Day-end: business days, payouts and payout files, generic maker-checker approvals, and bank
statement lines (imported by the reconciliation; DESIGN §5, specs/dayend-files.md).

Revision ID: 0003_dayend
Revises: 0002_medical
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_dayend"
down_revision = "0002_medical"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subject_kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=120), nullable=False),
        sa.Column("payload", sa.Text(), server_default="", nullable=False),
        sa.Column("made_by", sa.String(length=40), nullable=False),
        sa.Column("made_at_us", sa.BigInteger(), nullable=False),
        sa.Column("approved_by", sa.String(length=40), nullable=True),
        sa.Column("approved_at_us", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')", name=op.f("ck_approvals_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index(
        op.f("ix_approvals_subject_kind_subject_id"),
        "approvals",
        ["subject_kind", "subject_id"],
        unique=False,
    )
    op.create_table(
        "bank_statement_lines",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bank_id", sa.String(length=32), nullable=False),
        sa.Column("statement_date", sa.String(length=10), nullable=False),
        sa.Column("line_ref", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("counterparty", sa.String(length=120), server_default="", nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("matched_transfer_id", sa.String(length=64), nullable=True),
        sa.Column("file_name", sa.String(length=120), server_default="", nullable=False),
        sa.Column("imported_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_bank_statement_lines")),
        sa.UniqueConstraint(
            "bank_id", "line_ref", name=op.f("uq_bank_statement_lines_bank_id_line_ref")
        ),
    )
    op.create_index(
        op.f("ix_bank_statement_lines_statement_date"),
        "bank_statement_lines",
        ["statement_date"],
        unique=False,
    )
    op.create_table(
        "business_days",
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cutover_at_us", sa.BigInteger(), nullable=False),
        sa.Column("timezone", sa.String(length=40), nullable=False),
        sa.Column("run_by", sa.String(length=40), nullable=False),
        sa.Column("run_started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("run_finished_at_us", sa.BigInteger(), nullable=False),
        sa.Column("runs", sa.Integer(), server_default="1", nullable=False),
        sa.Column("approval_id", sa.BigInteger(), nullable=True),
        sa.Column("approved_by", sa.String(length=40), nullable=True),
        sa.Column("approved_at_us", sa.BigInteger(), nullable=True),
        sa.Column("report_name", sa.String(length=120), server_default="", nullable=False),
        sa.Column("report_sha256", sa.String(length=64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("business_date", name=op.f("pk_business_days")),
    )
    op.create_table(
        "payout_files",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("bank_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("mac", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("released_at_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_payout_files")),
    )
    op.create_index(
        op.f("ix_payout_files_business_date"), "payout_files", ["business_date"], unique=False
    )
    op.create_table(
        "payouts",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("business_date", sa.String(length=10), nullable=False),
        sa.Column("bank_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("institution_id", sa.String(length=32), nullable=True),
        sa.Column("cardholder_id", sa.String(length=20), nullable=True),
        sa.Column("account_no", sa.String(length=40), nullable=False),
        sa.Column("account_name", sa.String(length=120), server_default="", nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=120), server_default="", nullable=False),
        sa.Column("file_name", sa.String(length=120), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("transfer_id", sa.String(length=64), nullable=False),
        sa.Column("reissue_of", sa.String(length=96), nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("source IN ('insurance', 'ep')", name=op.f("ck_payouts_source_known")),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payouts_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
    )
    op.create_index(op.f("ix_payouts_business_date"), "payouts", ["business_date"], unique=False)
    op.create_index(op.f("ix_payouts_file_name"), "payouts", ["file_name"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_payouts_file_name"), table_name="payouts")
    op.drop_index(op.f("ix_payouts_business_date"), table_name="payouts")
    op.drop_table("payouts")
    op.drop_index(op.f("ix_payout_files_business_date"), table_name="payout_files")
    op.drop_table("payout_files")
    op.drop_table("business_days")
    op.drop_index(op.f("ix_bank_statement_lines_statement_date"), table_name="bank_statement_lines")
    op.drop_table("bank_statement_lines")
    op.drop_index(op.f("ix_approvals_subject_kind_subject_id"), table_name="approvals")
    op.drop_table("approvals")

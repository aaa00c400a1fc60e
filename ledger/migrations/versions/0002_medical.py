"""Medical rules: catalogue versions and items, policy years, special-category authorisations,
yearly accumulators, HIS bills, offline purchases counted, HIS credentials, fee-record files.

Revision ID: 0002_medical
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Registers the tables on ledger.schema.metadata wherever the migrations are loaded, so that a
# comparison of the migrated database with the metadata sees them.
import ledger.medical.tables  # noqa: F401

revision = "0002_medical"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "his_credentials",
        sa.Column("institution_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.PrimaryKeyConstraint("institution_id", name=op.f("pk_his_credentials")),
    )
    op.create_table(
        "medical_accumulators",
        sa.Column("person_id", sa.String(length=20), nullable=False),
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("eligible_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("deductible_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pooled_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("personal_account_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("self_pay_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lock_version", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("person_id", "year", name=op.f("pk_medical_accumulators")),
    )
    op.create_table(
        "medical_authorisations",
        sa.Column("person_id", sa.String(length=20), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("granted_at_us", sa.BigInteger(), nullable=False),
        sa.Column("granted_by", sa.String(length=40), nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger(), nullable=True),
        sa.Column("written_to_card", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint(
            "person_id", "category", "year", name=op.f("pk_medical_authorisations")
        ),
    )
    op.create_table(
        "medical_bills",
        sa.Column("bill_id", sa.String(length=16), nullable=False),
        sa.Column("institution_id", sa.String(length=32), nullable=False),
        sa.Column("his_bill_no", sa.String(length=40), nullable=False),
        sa.Column("card_no", sa.String(length=19), nullable=False),
        sa.Column("person_id", sa.String(length=20), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("bill_json", sa.Text(), nullable=False),
        sa.Column("split_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("d_eligible_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_deductible_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_pooled_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_personal_account_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_self_pay_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bill_id", name=op.f("pk_medical_bills")),
        sa.UniqueConstraint(
            "institution_id",
            "his_bill_no",
            name=op.f("uq_medical_bills_institution_id_his_bill_no"),
        ),
    )
    op.create_index(
        op.f("ix_medical_bills_person_id_year_state"),
        "medical_bills",
        ["person_id", "year", "state"],
        unique=False,
    )
    op.create_index(
        op.f("ix_medical_bills_state_expires_at_us"),
        "medical_bills",
        ["state", "expires_at_us"],
        unique=False,
    )
    op.create_table(
        "medical_catalogue_items",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("ceiling_fen", sa.BigInteger(), nullable=False),
        sa.Column("coverage", sa.String(length=2), nullable=False),
        sa.Column("self_pay_bp", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("version", "code", name=op.f("pk_medical_catalogue_items")),
    )
    op.create_table(
        "medical_catalogue_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("file_digest", sa.String(length=64), nullable=False),
        sa.Column("imported_at_us", sa.BigInteger(), nullable=False),
        sa.Column("imported_by", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_medical_catalogue_versions")),
    )
    op.create_table(
        "medical_fee_files",
        sa.Column("file_digest", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.String(length=32), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("amount_total_fen", sa.BigInteger(), nullable=False),
        sa.Column("imported_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("file_digest", name=op.f("pk_medical_fee_files")),
        sa.UniqueConstraint(
            "institution_id",
            "business_date",
            name=op.f("uq_medical_fee_files_institution_id_business_date"),
        ),
    )
    op.create_table(
        "medical_fee_records",
        sa.Column("file_digest", sa.String(length=64), nullable=False),
        sa.Column("line", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("card_no", sa.String(length=19), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("fund_fen", sa.BigInteger(), nullable=False),
        sa.Column("charged_at", sa.String(length=14), nullable=False),
        sa.PrimaryKeyConstraint("file_digest", "line", name=op.f("pk_medical_fee_records")),
    )
    op.create_index(
        op.f("ix_medical_fee_records_reference"), "medical_fee_records", ["reference"], unique=False
    )
    op.create_table(
        "medical_offline_counts",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=20), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("d_eligible_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_deductible_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_pooled_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_personal_account_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("d_self_pay_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_medical_offline_counts")),
    )
    op.create_table(
        "medical_policies",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("imported_at_us", sa.BigInteger(), nullable=False),
        sa.Column("imported_by", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_medical_policies")),
    )


def downgrade() -> None:
    op.drop_table("medical_policies")
    op.drop_table("medical_offline_counts")
    op.drop_index(op.f("ix_medical_fee_records_reference"), table_name="medical_fee_records")
    op.drop_table("medical_fee_records")
    op.drop_table("medical_fee_files")
    op.drop_table("medical_catalogue_versions")
    op.drop_table("medical_catalogue_items")
    op.drop_index(op.f("ix_medical_bills_state_expires_at_us"), table_name="medical_bills")
    op.drop_index(op.f("ix_medical_bills_person_id_year_state"), table_name="medical_bills")
    op.drop_table("medical_bills")
    op.drop_table("medical_authorisations")
    op.drop_table("medical_accumulators")
    op.drop_table("his_credentials")

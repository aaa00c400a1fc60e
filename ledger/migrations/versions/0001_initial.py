"""Initial schema: institutions, terminals, PSAMs, cardholders, cards, accounts, transfers,
the response cache, blacklist, offline records, review items, reversal queue and audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=40), nullable=False),
        sa.Column("flags", sa.Integer(), server_default="0", nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint(
            "debits_posted >= 0 AND credits_posted >= 0",
            name=op.f("ck_accounts_posted_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    op.create_table(
        "blacklist",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("application_serial", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("removed_version", sa.Integer(), nullable=True),
        sa.Column("added_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_blacklist")),
    )
    op.create_index(
        op.f("ix_blacklist_application_serial"), "blacklist", ["application_serial"], unique=False
    )
    op.create_index(op.f("ix_blacklist_version"), "blacklist", ["version"], unique=False)

    op.create_table(
        "institutions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=True),
        sa.Column("settlement_bank_id", sa.String(length=32), nullable=True),
        sa.Column("settlement_account_no", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.ForeignKeyConstraint(
            ["settlement_bank_id"],
            ["institutions.id"],
            name=op.f("fk_institutions_settlement_bank_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institutions")),
    )
    op.create_table(
        "offline_records",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("psam_terminal_no", sa.String(length=12), nullable=False),
        sa.Column("psam_serial", sa.BigInteger(), nullable=False),
        sa.Column("terminal_id", sa.String(length=8), nullable=False),
        sa.Column("batch_no", sa.Integer(), nullable=False),
        sa.Column("application_serial", sa.String(length=20), nullable=False),
        sa.Column("purse", sa.String(length=2), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("tac", sa.String(length=8), nullable=False),
        sa.Column("card_datetime", sa.String(length=14), nullable=False),
        sa.Column("transfer_id", sa.String(length=64), nullable=True),
        sa.Column("received_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_offline_records")),
        sa.UniqueConstraint(
            "psam_terminal_no",
            "psam_serial",
            name=op.f("uq_offline_records_psam_terminal_no_psam_serial"),
        ),
    )
    op.create_table(
        "response_cache",
        sa.Column("message_key", sa.String(length=80), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("message_key", name=op.f("pk_response_cache")),
    )
    op.create_index(
        op.f("ix_response_cache_expires_at_us"), "response_cache", ["expires_at_us"], unique=False
    )

    op.create_table(
        "reversal_queue",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("bank_id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=240), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_reversal_queue")),
        sa.UniqueConstraint("key", name=op.f("uq_reversal_queue_key")),
    )
    op.create_table(
        "review_items",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=240), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at_us", sa.BigInteger(), nullable=True),
        sa.Column("resolved_by", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_review_items")),
        sa.UniqueConstraint("key", name=op.f("uq_review_items_key")),
    )
    op.create_table(
        "transfers",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("debit_account_id", sa.String(length=64), nullable=False),
        sa.Column("credit_account_id", sa.String(length=64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=240), server_default="", nullable=False),
        sa.Column("result", sa.SmallInteger(), nullable=False),
        sa.Column("posted_at_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_transfers_amount_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_transfers")),
        sa.UniqueConstraint("id", name=op.f("uq_transfers_id")),
    )
    op.create_index(
        op.f("ix_transfers_credit_account_id"), "transfers", ["credit_account_id"], unique=False
    )
    op.create_index(
        op.f("ix_transfers_debit_account_id"), "transfers", ["debit_account_id"], unique=False
    )

    op.create_table(
        "cardholders",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("ssn", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("category", sa.String(length=10), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("unit_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["institutions.id"], name=op.f("fk_cardholders_unit_id_institutions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cardholders")),
        sa.UniqueConstraint("ssn", name=op.f("uq_cardholders_ssn")),
    )
    op.create_table(
        "terminals",
        sa.Column("id", sa.String(length=8), nullable=False),
        sa.Column("institution_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("batch_no", sa.Integer(), server_default="1", nullable=False),
        sa.Column("stan", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_terminals_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminals")),
    )
    op.create_table(
        "cards",
        sa.Column("card_no", sa.String(length=19), nullable=False),
        sa.Column("application_serial", sa.String(length=20), nullable=False),
        sa.Column("cardholder_id", sa.String(length=20), nullable=False),
        sa.Column("key_version", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("expiry", sa.Date(), nullable=False),
        sa.Column("replaced_by", sa.String(length=19), nullable=True),
        sa.Column("cancelled_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cardholder_id"], ["cardholders.id"], name=op.f("fk_cards_cardholder_id_cardholders")
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by"], ["cards.card_no"], name=op.f("fk_cards_replaced_by_cards")
        ),
        sa.PrimaryKeyConstraint("card_no", name=op.f("pk_cards")),
        sa.UniqueConstraint("application_serial", name=op.f("uq_cards_application_serial")),
    )
    op.create_index(op.f("ix_cards_cardholder_id"), "cards", ["cardholder_id"], unique=False)

    op.create_table(
        "psams",
        sa.Column("serial", sa.String(length=20), nullable=False),
        sa.Column("psam_terminal_no", sa.String(length=12), nullable=False),
        sa.Column("institution_id", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", sa.String(length=8), nullable=True),
        sa.Column("key_version", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_psams_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_psams_terminal_id_terminals")
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_psams")),
        sa.UniqueConstraint("psam_terminal_no", name=op.f("uq_psams_psam_terminal_no")),
    )

    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_table("psams")
    op.drop_index(op.f("ix_cards_cardholder_id"), table_name="cards")

    op.drop_table("cards")
    op.drop_table("terminals")
    op.drop_table("cardholders")
    op.drop_index(op.f("ix_transfers_debit_account_id"), table_name="transfers")
    op.drop_index(op.f("ix_transfers_credit_account_id"), table_name="transfers")

    op.drop_table("transfers")
    op.drop_table("review_items")
    op.drop_table("reversal_queue")
    op.drop_index(op.f("ix_response_cache_expires_at_us"), table_name="response_cache")

    op.drop_table("response_cache")
    op.drop_table("offline_records")
    op.drop_table("institutions")
    op.drop_index(op.f("ix_blacklist_version"), table_name="blacklist")
    op.drop_index(op.f("ix_blacklist_application_serial"), table_name="blacklist")

    op.drop_table("blacklist")
    op.drop_table("audit_log")
    op.drop_table("accounts")


APPEND_ONLY = ("transfers", "audit_log")

_SQLITE_TRIGGER = """
CREATE TRIGGER {table}_{verb}_refused BEFORE {verb} ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END
"""

_PG_FUNCTION = """
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only'; END $$
"""

_PG_TRIGGER = """
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION refuse_change()
"""


def _create_append_only_triggers() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in APPEND_ONLY:
            op.execute(_PG_TRIGGER.format(table=table))
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(_SQLITE_TRIGGER.format(table=table, verb=verb))


def _drop_append_only_triggers() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute("DROP FUNCTION refuse_change()")
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"DROP TRIGGER {table}_{verb}_refused")

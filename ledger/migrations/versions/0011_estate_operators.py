"""The estate by command and real operator identities (issue 19).

- ``terminal_parameters``: versioned offline limits and category tables, for every terminal
  (scope ``all``), an institution's (``institution:ID``) or a group's (``group:NAME``); a
  terminal downloads the newest version of the narrowest scope that has one.
- ``terminals.param_group``: the parameter group a terminal belongs to (optional).
- ``blacklist.note``: why an entry was added or removed by an operator.
- ``directory_version`` row 2, the estate's change count: every change of a terminal's
  institution, kind or status and of any institution adds one (triggers), so a running daemon
  forgets the terminal records it keeps (switch/sessions.py) — a disabled terminal is refused
  at its next message. A sign-on's batch number does not count.
- ``operators`` (roles, a scrypt password hash, status) and ``operator_tokens`` (the SHA-256
  of short-lived login tokens): who acts in back-office and key commands.

Revision ID: 0011_estate_operators
Revises: 0010_sealed_cardholders
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_estate_operators"
down_revision = "0010_sealed_cardholders"
branch_labels = None
depends_on = None

ESTATE = 2  # the directory_version row counting estate changes

_SQLITE_TRIGGERS = (
    ("terminals_insert_estate", "AFTER INSERT ON terminals"),
    ("terminals_delete_estate", "AFTER DELETE ON terminals"),
    ("terminals_update_estate", "AFTER UPDATE OF institution_id, kind, status ON terminals"),
    ("institutions_insert_estate", "AFTER INSERT ON institutions"),
    ("institutions_delete_estate", "AFTER DELETE ON institutions"),
    ("institutions_update_estate", "AFTER UPDATE ON institutions"),
)
_SQLITE_TRIGGER = """
CREATE TRIGGER {name} {event}
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 2; END
"""
_PG_FUNCTION = """
CREATE FUNCTION count_estate_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 2; RETURN NULL; END $$
"""
_PG_TRIGGERS = (
    (
        "terminals_estate",
        "AFTER INSERT OR DELETE OR UPDATE OF institution_id, kind, status ON terminals",
    ),
    ("institutions_estate", "AFTER INSERT OR UPDATE OR DELETE ON institutions"),
)
_PG_TRIGGER = """
CREATE TRIGGER {name} {event}
FOR EACH STATEMENT EXECUTE FUNCTION count_estate_change()
"""


def upgrade() -> None:
    op.create_table(
        "terminal_parameters",
        sa.Column(
            "version",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=48), nullable=False),
        sa.Column("floor_fen", sa.BigInteger(), nullable=False),
        sa.Column("count_max", sa.Integer(), nullable=False),
        sa.Column("age_max_h", sa.Integer(), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_terminal_parameters")),
    )
    op.create_index(
        op.f("ix_terminal_parameters_scope"), "terminal_parameters", ["scope"], unique=False
    )
    op.create_table(
        "operators",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("roles", sa.String(length=80), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("password_changed_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_operators")),
    )
    op.create_table(
        "operator_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=40), nullable=False),
        sa.Column("issued_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator"], ["operators.name"], name=op.f("fk_operator_tokens_operator_operators")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_operator_tokens")),
    )
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("param_group", sa.String(length=32), nullable=True))
    with op.batch_alter_table("blacklist") as batch:
        batch.add_column(sa.Column("note", sa.String(length=200), nullable=True))
    op.execute(f"INSERT INTO directory_version (id, version) VALUES ({ESTATE}, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for name, event in _PG_TRIGGERS:
            op.execute(_PG_TRIGGER.format(name=name, event=event))
        return
    for name, event in _SQLITE_TRIGGERS:
        op.execute(_SQLITE_TRIGGER.format(name=name, event=event))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER terminals_estate ON terminals")
        op.execute("DROP TRIGGER institutions_estate ON institutions")
        op.execute("DROP FUNCTION count_estate_change()")
    else:
        for name, _ in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.execute(f"DELETE FROM directory_version WHERE id = {ESTATE}")
    with op.batch_alter_table("blacklist") as batch:
        batch.drop_column("note")
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("param_group")
    op.drop_table("operator_tokens")
    op.drop_table("operators")
    op.drop_index(op.f("ix_terminal_parameters_scope"), table_name="terminal_parameters")
    op.drop_table("terminal_parameters")

"""The card directory's change count: every insert, update or delete of a card, a PSAM or a
blacklist entry — by the daemon, a CLI or any other tool — adds one to
``directory_version.version`` (triggers), so a daemon can keep card records in memory and
forget them as soon as it sees the count move (switch/cards.py).

Revision ID: 0007_directory_version
Revises: 0006_sign_offs
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_directory_version"
down_revision = "0006_sign_offs"
branch_labels = None
depends_on = None

WATCHED = ("cards", "psams", "blacklist")
VERBS = ("INSERT", "UPDATE", "DELETE")

_SQLITE_TRIGGER = """
CREATE TRIGGER {table}_{name}_counted AFTER {verb} ON {table}
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END
"""
_PG_FUNCTION = """
CREATE FUNCTION count_directory_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; RETURN NULL; END $$
"""
_PG_TRIGGER = """
CREATE TRIGGER {table}_counted AFTER INSERT OR UPDATE OR DELETE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION count_directory_change()
"""


def upgrade() -> None:
    op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_version")),
    )
    op.execute("INSERT INTO directory_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in WATCHED:  # once per statement: a bulk import counts once
            op.execute(_PG_TRIGGER.format(table=table))
        return
    for table in WATCHED:
        for verb in VERBS:
            op.execute(_SQLITE_TRIGGER.format(table=table, name=verb.lower(), verb=verb))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER {table}_counted ON {table}")
        op.execute("DROP FUNCTION count_directory_change()")
    else:
        for table in WATCHED:
            for verb in VERBS:
                op.execute(f"DROP TRIGGER {table}_{verb.lower()}_counted")
    op.drop_table("directory_version")

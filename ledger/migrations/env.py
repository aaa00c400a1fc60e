"""Alembic environment, always run programmatically through ledger.migrate (no alembic.ini, no
URL in files): online on a SQLAlchemy connection passed in ``config.attributes["connection"]``,
or offline (``sql=True``) writing the DDL for ``attributes["dialect"]`` into
``attributes["buffer"]`` — how PostgreSQL is migrated through asyncpg, the only PostgreSQL driver
the project carries."""

from __future__ import annotations

from alembic import context

from ledger.schema import metadata

attributes = context.config.attributes

if context.is_offline_mode():
    context.configure(
        dialect_name=attributes["dialect"],
        output_buffer=attributes["buffer"],
        target_metadata=metadata,
        literal_binds=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through ledger.migrate, which passes a connection")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()

"""SQLAlchemy Core statements through asyncpg, over a `ledger.pg_bridge.PgBridge`.

:class:`PgEngine`, the part of a SQLAlchemy ``Engine`` the reference data and the back office
(day-end, review, statements, file imports) use: Core statements compiled for PostgreSQL and
run through asyncpg; rows as named tuples, ``mappings()``, ``scalars()``; raw SQL with ``?``
through ``exec_driver_sql``.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from ledger.pg_bridge import _RETURNS_ROWS, PgBridge, SyncConnection, dollar_params, rowcount

_DIALECT = asyncpg_dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=64)
def _row_type(names: tuple[str, ...]) -> Any:
    return namedtuple("Row", names, rename=True)


_COMPILED: dict[Any, Any] = {}
_COMPILED_MAX = 1000


def _compiled(statement: Any, keys: list[str] | None) -> tuple[Any, Any]:
    """The statement compiled for PostgreSQL, once per shape (SQLAlchemy's cache key; the
    values of this call are its extracted parameters) — compiling is costly, and the caller
    holds the GIL the bridge's loop needs. A statement with ``IN`` of a list (as many
    parameters as the list has values) is compiled at each call, its parameters rendered."""
    cache_key = statement._generate_cache_key()
    shape = None if cache_key is None else (cache_key.key, tuple(keys) if keys else None)
    compiled = _COMPILED.get(shape) if shape is not None else None
    if compiled is None:
        compiled = statement.compile(dialect=_DIALECT, column_keys=keys, cache_key=cache_key)
        if _POSTCOMPILE in compiled.string:
            compiled = _EXPANDING
        if shape is not None:
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            _COMPILED[shape] = compiled
    if compiled is _EXPANDING:
        render = {"render_postcompile": True}
        return statement.compile(dialect=_DIALECT, column_keys=keys, compile_kwargs=render), None
    return compiled, None if cache_key is None else cache_key.bindparams


_POSTCOMPILE = "__[POSTCOMPILE_"
_EXPANDING = object()  # the cache's mark of a statement compiled at each call


class Result:
    """What the callers use of SQLAlchemy's ``Result`` (rows are named tuples)."""

    def __init__(self, rows: list[Any], count: int) -> None:
        self._rows = rows
        self.rowcount = count

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return list(self._rows)

    fetchall = all

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"one row expected, {len(self._rows)} found")
        return self._rows[0][0]

    def scalars(self) -> Result:
        return Result([row[0] for row in self._rows], self.rowcount)

    def mappings(self) -> Result:
        rows = [dict(zip(row._fields, row, strict=True)) for row in self._rows]
        return Result(rows, self.rowcount)

    @property
    def inserted_primary_key(self) -> tuple[Any, ...] | None:
        """An INSERT's key (PostgreSQL's statements carry RETURNING of the primary key)."""
        return tuple(self._rows[0]) if self._rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class PgEngine:
    """What the reference data uses of a SQLAlchemy ``Engine``, over a :class:`PgBridge`."""

    dialect = _DIALECT

    def __init__(self, bridge: PgBridge) -> None:
        self.bridge = bridge

    def connect(self) -> PgSaConnection:
        return PgSaConnection(self.bridge)

    @contextmanager
    def begin(self) -> Iterator[PgSaConnection]:
        with self.connect() as connection, connection.begin():
            yield connection

    def dispose(self) -> None:
        """The bridge is its owner's to close."""


class PgSaConnection:
    def __init__(self, bridge: PgBridge) -> None:
        self._raw = SyncConnection(bridge)
        self._bridge = bridge

    def __enter__(self) -> PgSaConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    dialect = _DIALECT

    def execution_options(self, **_: Any) -> PgSaConnection:
        return self

    def get_execution_options(self) -> dict[str, Any]:
        return {}

    def exec_driver_sql(self, sql: str, parameters: Sequence[Any] = ()) -> Result:
        """Raw SQL with ``?`` placeholders (as on SQLite)."""
        return self._bridge.run(self._one(dollar_params(sql), list(parameters)))

    @contextmanager
    def begin(self) -> Iterator[PgSaConnection]:
        self._raw.execute("BEGIN")
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def commit(self) -> None:
        if self._raw.in_transaction:
            self._raw.execute("COMMIT")

    def rollback(self) -> None:
        if self._raw.in_transaction:
            self._raw.execute("ROLLBACK")

    def close(self) -> None:
        self._raw.close()

    def execute(self, statement: Any, parameters: Any = None) -> Result:
        many = isinstance(parameters, list)
        keys = list(parameters[0]) if many and parameters else None
        compiled, extracted = _compiled(statement, keys)
        names = compiled.positiontup or []
        if many:
            rows = [
                [compiled.construct_params(p, extracted_parameters=extracted)[n] for n in names]
                for p in parameters
            ]
            return self._bridge.run(self._many(compiled.string, rows))
        bound = compiled.construct_params(parameters, extracted_parameters=extracted)
        return self._bridge.run(self._one(compiled.string, [bound[n] for n in names]))

    async def _one(self, sql: str, values: list[Any]) -> Result:
        held = self._raw._held
        if held is not None:
            return await _fetch(held, sql, values)
        async with self._bridge.pool.acquire() as connection:
            return await _fetch(connection, sql, values)

    async def _many(self, sql: str, rows: list[list[Any]]) -> Result:
        held = self._raw._held
        if held is not None:
            await held.executemany(sql, rows)
        else:
            async with self._bridge.pool.acquire() as connection:
                await connection.executemany(sql, rows)
        return Result([], len(rows))


async def _fetch(connection: asyncpg.Connection, sql: str, values: list[Any]) -> Result:
    if _RETURNS_ROWS.search(sql):
        found = await connection.fetch(sql, *values)
        if not found:
            return Result([], 0)
        kind = _row_type(tuple(found[0].keys()))
        return Result([kind(*row) for row in found], len(found))
    return Result([], rowcount(await connection.execute(sql, *values)))

"""PostgreSQL for the synchronous stores: an asyncpg pool on an event loop of its own thread.

The medical store, the card directory and the reference data are synchronous (their callers run
them in a thread, or as a point read). On SQLite they use ``sqlite3`` and SQLAlchemy Core; on
PostgreSQL the same code runs over two small adapters onto one :class:`PgBridge` (asyncpg, no
second driver). Here the bridge, the connection it holds between uses (:class:`HeldConnection`)
and the first adapter:

- :class:`SyncConnection`, the part of ``sqlite3.Connection`` the raw stores use (``?``
  parameters become ``$n``; ``BEGIN``/``COMMIT``/``ROLLBACK``; ``BEGIN IMMEDIATE`` also takes
  the store's advisory lock, one writer at a time as on SQLite). A statement that fails inside a
  transaction rolls it back (PostgreSQL refuses anything else in it), so ``in_transaction`` tells
  the group writer that the batch is lost.

The second, the part of a SQLAlchemy ``Engine`` (``PgEngine``), is `ledger.pg_engine`'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from ledger.pg_connection import CONNECT_TIMEOUT_S, KeptAlive, keep_session

T = TypeVar("T")
_QUERY = re.compile(r"\s*(SELECT|WITH|VALUES)\b", re.IGNORECASE)
_RETURNS_ROWS = re.compile(r"^\s*(SELECT|WITH|VALUES)\b|\bRETURNING\b", re.IGNORECASE)


def split_url(url: str) -> tuple[str, str | None]:
    """(DSN, schema) of a database URL; ``?schema=NAME`` picks the schema (``search_path``).

    >>> split_url("postgresql://u@h/db?schema=t_1")
    ('postgresql://u@h/db', 't_1')
    """
    dsn, _, query = url.partition("?")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    schema = options.pop("schema", None)
    rest = "&".join(f"{k}={v}" for k, v in options.items())
    return (f"{dsn}?{rest}" if rest else dsn), schema


APPLICATION = "medswitch"  # application_name: the daemon's backends in pg_stat_activity


def server_settings(schema: str | None, application: str = APPLICATION) -> dict[str, str]:
    settings = {"plan_cache_mode": "force_custom_plan", "application_name": application}
    if schema:
        settings["search_path"] = schema
    return settings


@functools.lru_cache(maxsize=512)
def dollar_params(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the stores' SQL has no ``?`` in
    literals).

    >>> dollar_params("SELECT a FROM t WHERE b = ? AND c = ?")
    'SELECT a FROM t WHERE b = $1 AND c = $2'
    """
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def rowcount(status: str) -> int:
    """The row count of a command status ("UPDATE 3", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


def gone(held: Any) -> bool:
    """Whether a pooled connection held between uses was lost (the pool takes a lost one back
    by itself, after which the proxy refuses every call)."""
    try:
        return bool(held.is_closed())
    except asyncpg.InterfaceError:
        return True


class HeldConnection:
    """One connection of an asyncpg pool held between uses, taken in turn: for point reads that
    come often (asyncpg's acquire and release cost more CPU than such a read: 360 µs a read
    through ``pool.fetch``, 110 µs on a held connection, measured on the bench box). A use that
    fails gives it back, as does one that finds it lost (the next acquire makes a new one);
    after :meth:`close`, a use takes a pooled connection for itself (the pool's close would
    wait for one held again)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._held: Any = None  # the pool's connection proxy, between uses
        self._turn = asyncio.Lock()
        self._closed = False

    async def use(self, work: Callable[[Any], Awaitable[T]]) -> T:
        async with self._turn:
            if self._closed:
                async with self._pool.acquire() as connection:
                    return await work(connection)
            if self._held is not None and gone(self._held):
                await self._give_back()
            if self._held is None:
                self._held = await self._pool.acquire()
            try:
                return await work(self._held)
            except BaseException:
                await self._give_back()
                raise

    async def close(self) -> None:
        async with self._turn:
            self._closed = True
            await self._give_back()

    async def _give_back(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self._pool.release(held)


class PgBridge:
    """An asyncpg pool served by a loop on a daemon thread; :meth:`run` from any other thread."""

    def __init__(
        self,
        url: str,
        *,
        size: int = 8,
        timeout_s: float = 30.0,
        application: str = APPLICATION,
    ) -> None:
        self.dsn, self.schema = split_url(url)
        self.timeout_s = timeout_s
        self.application = application  # its backends' application_name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pg-bridge", daemon=True
        )
        self._thread.start()
        try:
            self.pool: asyncpg.Pool = self.run(self._open(size))
        except BaseException:
            self._stop()
            raise

    async def _open(self, size: int) -> asyncpg.Pool:
        settings = server_settings(self.schema, self.application)
        return await asyncpg.create_pool(  # lost connections are made again at acquire
            self.dsn,
            min_size=1,
            max_size=size,
            server_settings=settings,
            timeout=CONNECT_TIMEOUT_S,
            connection_class=KeptAlive,
            reset=keep_session,  # no reset query: no session state to undo
        )

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result, run on the bridge's loop; TimeoutError (and the coroutine
        cancelled) when the database does not answer within ``timeout_s``."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("PgBridge.run called from its own loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("PostgreSQL did not answer in time") from None

    def connection(self, lock_key: int | None = None, *, keep: bool = False) -> SyncConnection:
        return SyncConnection(self, lock_key, keep=keep)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(asyncio.wait_for(self.pool.close(), timeout=10))
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class Cursor:
    def __init__(self, rows: list[Any], count: int) -> None:
        self._rows = rows
        self.rowcount = count

    def fetchone(self) -> Any:
        return tuple(self._rows[0]) if self._rows else None

    def fetchall(self) -> list[Any]:
        return [tuple(row) for row in self._rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class SyncConnection:
    """What the raw stores use of ``sqlite3.Connection``, on PostgreSQL. Outside a transaction
    each statement runs on any pooled connection (autocommit) — or, with ``keep``, on one
    pooled connection kept between statements, taken in turn, given back by :meth:`close` (or
    by a statement that fails): for a store that reads often, as the daemon's card directory
    (asyncpg's acquire and release cost more CPU than a point read); inside a transaction, on
    one held for it."""

    def __init__(
        self, bridge: PgBridge, lock_key: int | None = None, *, keep: bool = False
    ) -> None:
        self._bridge = bridge
        self._lock_key = lock_key
        self._held: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._kept = HeldConnection(bridge.pool) if keep else None
        self.total_changes = 0

    @property
    def in_transaction(self) -> bool:
        return self._transaction is not None

    def __enter__(self) -> SyncConnection:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK" if kind is not None else "COMMIT")

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        command = sql.strip().upper()
        if command.startswith("BEGIN"):
            self._bridge.run(self._begin(immediate="IMMEDIATE" in command))
            return Cursor([], -1)
        if command in ("COMMIT", "ROLLBACK"):
            self._bridge.run(self._end(command == "COMMIT"))
            return Cursor([], -1)
        if command.startswith("PRAGMA"):
            return Cursor([], -1)
        cursor = self._bridge.run(self._statement(dollar_params(sql), tuple(parameters)))
        if cursor.rowcount > 0 and not _QUERY.match(sql):
            self.total_changes += cursor.rowcount
        return cursor

    def close(self) -> None:
        if self._held is not None:
            self._bridge.run(self._end(False))
        if self._kept is not None:  # on the bridge's loop: a statement may be taking it
            self._bridge.run(self._kept.close())

    async def _begin(self, *, immediate: bool) -> None:
        if self._transaction is not None:
            raise RuntimeError("a transaction is already open")
        self._held = await self._bridge.pool.acquire()
        self._transaction = self._held.transaction()
        try:
            await self._transaction.start()
            if immediate and self._lock_key is not None:
                await self._held.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
        except BaseException:
            await self._end(False)
            raise

    async def _end(self, commit: bool) -> None:
        transaction, held = self._transaction, self._held
        self._transaction, self._held = None, None
        try:
            if transaction is not None:
                await (transaction.commit() if commit else transaction.rollback())
        finally:
            if held is not None:
                await self._bridge.pool.release(held)

    async def _statement(self, sql: str, parameters: tuple[Any, ...]) -> Cursor:
        if self._held is None and self._kept is not None:
            return await self._kept.use(functools.partial(_run, sql=sql, parameters=parameters))
        if self._held is None:
            async with self._bridge.pool.acquire() as connection:
                return await _run(connection, sql, parameters)
        try:
            return await _run(self._held, sql, parameters)
        except Exception:
            await self._end(False)  # PostgreSQL refuses the rest of the transaction anyway
            raise


async def _run(connection: asyncpg.Connection, sql: str, parameters: tuple[Any, ...]) -> Cursor:
    if _RETURNS_ROWS.search(sql):
        rows = await connection.fetch(sql, *parameters)
        return Cursor(rows, len(rows))
    return Cursor([], rowcount(await connection.execute(sql, *parameters)))

"""The daemon's stores on the configured database: the embedded SQLite file or PostgreSQL.

:func:`open_stores` picks the backend from the URL (``sqlite:///FILE`` or ``postgresql://...``,
``?schema=NAME`` for a schema other than the user's default) and opens every store the daemon
uses behind the same interfaces; :meth:`Stores.close` closes them. On PostgreSQL the schema is
migrated to the newest revision first (serialised by an advisory lock: several workers may
start at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from ledger.core import Ledger
from ledger.medical.sql_reference import ReferenceData, SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from ledger.migrate import upgrade_postgres, upgrade_sqlite
from ledger.pg_bridge import APPLICATION, PgBridge, server_settings, split_url
from ledger.pg_connection import CONNECT_TIMEOUT_S, KeptAlive, keep_session, warm
from ledger.pg_engine import PgEngine
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger
from switch.bank.cards import CardStatusStore, SqliteCardStatus
from switch.bank.saf_store import PgReversalQueue, ReversalQueue, SqliteReversalQueue
from switch.cards import KEEP_S, Forgetting, SqlCards, SqliteCards
from switch.pg_stores import HeldReads, PgCardStatus, PgKeyStore
from switch.replies import ReplyCache
from switch.reply_file import FileReplyCache
from switch.reply_store import SharedReplyCache
from switch.sequences import PgSequences, Sequences, SqliteSequences
from switch.session_store import SqliteSessionKeys
from switch.sessions import SqliteTerminals, SqlTerminals

POOL_MAX = 8  # per worker, per pool (the event loop's and the bridge's)
#: Group-committing ledger connections per worker (row locks order them). One: every advice and
#: completion posts to the same few rows (the pooled fund, the institutions' payables), so two
#: writers per worker mostly waited for each other's row locks with smaller groups
#: (bench_workers, interleaved: 1 worker 658-700 vs 613-625 exchanges/s, 2 workers 633-645 vs
#: 524-552/s, p99 77-87 vs 88-116 ms).
LEDGER_WRITERS = 1
#: SQLite: after a shared batch the one writer (ledger and bills) waits this long for more. None
#: since the bills' writes come from the event loop rather than pool threads: each job arriving
#: in the window woke the writer and took the GIL from the loop (bench_settle, interleaved:
#: 1,652-1,725 exchanges/s, p99 24.7 ms without; 1,251-1,271/s, p99 28-39 ms with 2 ms).
WINDOW_S = 0.0


@dataclass
class Stores:
    url: str
    ledger: Ledger
    terminals: SqlTerminals
    cards: SqlCards
    medical_store: SqlMedicalStore
    directory: SqlDirectory
    reference: ReferenceData
    card_status: CardStatusStore  # the bank links' card status register
    reversal_queue: ReversalQueue  # the reversal queue's delivery state
    sequences: Sequences
    pool: asyncpg.Pool | None = None  # PostgreSQL: this worker's pool on its event loop
    bridge: PgBridge | None = None  # PostgreSQL: the synchronous stores' pool
    _engine: Any = field(default=None, repr=False)
    _session_sets: PgKeyStore | SqliteSessionKeys | None = field(default=None, repr=False)
    _replies: ReplyCache | None = field(default=None, repr=False)
    _reads: HeldReads | None = field(default=None, repr=False)  # PostgreSQL: one held connection

    @property
    def postgres(self) -> bool:
        return self.pool is not None

    def session_sets(self) -> PgKeyStore | SqliteSessionKeys:
        """Terminals' working-key sets and their key blocks (``switch.session_store``), in
        this database (one store, closed with the others)."""
        if self._session_sets is None:
            if self.pool is not None:
                self._session_sets = PgKeyStore(self.pool, self._reads)
            else:
                self._session_sets = SqliteSessionKeys(Path(self.url.removeprefix("sqlite:///")))
        return self._session_sets

    def reply_cache(self) -> ReplyCache:
        """The retransmission cache (one, closed with the stores): shared through the database
        on PostgreSQL (several workers; opened with the stores, on a connection of its own); on
        SQLite (one process) in the process, and durable in its own file beside the ledger's,
        written by a thread of its own (a restart still answers a retransmission byte for
        byte)."""
        if self._replies is None:
            if isinstance(self.ledger, SqliteLedger):
                path = Path(self.url.removeprefix("sqlite:///"))
                self._replies = FileReplyCache(path, self.ledger.writer)
            else:
                self._replies = ReplyCache()
        return self._replies

    async def close(self) -> None:
        if self._replies is not None:  # its last writes, before the ledger's
            await self._replies.close()
        if isinstance(self._session_sets, SqliteSessionKeys):
            await asyncio.to_thread(self._session_sets.close)
        await self.ledger.close()
        self.cards.close()
        self.terminals.close()
        await asyncio.to_thread(self.medical_store.close)
        if self.bridge is not None:
            await asyncio.to_thread(self.bridge.close)
        elif self._engine is not None:
            self._engine.dispose()
        if self._reads is not None:  # its connection back, before the pool closes
            await self._reads.close()
        if self.pool is not None:
            await self.pool.close()


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


async def open_stores(url: str, *, writer_process: bool = False) -> Stores:
    """The stores on ``url``; on SQLite with ``writer_process``, the ledger's writer (which
    writes the bills too) in a process of its own (`ledger.writer.process`) — when this
    process may run on more than one CPU: on one, a second process only adds its hand-offs."""
    if is_postgres(url):
        return await _open_postgres(url)
    if not url.startswith("sqlite:///"):
        raise ValueError(f"unsupported database URL {url.split('://')[0]}://...")
    apart = writer_process and len(os.sched_getaffinity(0)) > 1
    return await _open_sqlite(Path(url.removeprefix("sqlite:///")), apart)


async def _open_sqlite(path: Path, writer_process: bool = False) -> Stores:
    engine = sqlite_engine(path)  # reference data: SQLAlchemy Core; bills: group-committed
    # the file's one writer, bills too; a process is attached to this loop (the HIS API's
    # threads write through it too)
    ledger = await SqliteLedger.open_attached(path, window_s=WINDOW_S, process=writer_process)
    cards = SqliteCards(path, keep_s=KEEP_S)
    return Stores(
        url=f"sqlite:///{path}",
        ledger=ledger,
        terminals=SqliteTerminals(path, keep_s=KEEP_S),
        cards=cards,
        medical_store=SqlMedicalStore(engine, ledger_writer=ledger.writer),
        directory=SqlDirectory(engine),
        reference=ReferenceData(engine),
        card_status=Forgetting(SqliteCardStatus(path), cards),
        reversal_queue=SqliteReversalQueue(path),
        sequences=SqliteSequences(path),
        _engine=engine,
    )


async def migrate_postgres(url: str) -> None:
    dsn, schema = split_url(url)
    connection = await asyncpg.connect(dsn, server_settings=server_settings(schema))
    try:
        await upgrade_postgres(connection)
    finally:
        await connection.close()


async def _open_postgres(url: str) -> Stores:
    dsn, schema = split_url(url)
    await migrate_postgres(url)
    # Opened whole and kept: the terminals' sign-ons at the start of a day (each a transaction)
    # take every connection at once, and a connection opened then, or again after five idle
    # minutes (asyncpg's default), cost its backend's cold start and its array types'
    # introspection in the middle of the traffic (bench_workers: 14 of each per run).
    pool = await asyncpg.create_pool(  # lost connections are made again at acquire
        dsn,
        min_size=POOL_MAX,
        max_size=POOL_MAX,
        max_inactive_connection_lifetime=0,
        server_settings=server_settings(schema),
        timeout=CONNECT_TIMEOUT_S,  # an unreachable server: 96 soon, not a minute's wait
        connection_class=KeptAlive,  # a silent drop noticed in seconds
        reset=keep_session,  # no reset query: no session state to undo
        init=warm,  # the array codecs in one statement at connect
    )
    opened: list[Any] = [pool]
    try:
        ledger = await PgLedger.open(dsn, schema=schema, writers=LEDGER_WRITERS, migrate=False)
        opened.append(ledger)
        replies = await SharedReplyCache.open(dsn, schema)  # a connection of its own
        opened.append(replies)
        bridge = await asyncio.to_thread(
            PgBridge, url, size=POOL_MAX, application=f"{APPLICATION}-bridge"
        )
        engine = PgEngine(bridge)
        cards = SqlCards(bridge.connection(keep=True), keep_s=KEEP_S)
        terminals = SqlTerminals(bridge.connection, keep_s=KEEP_S)
        reads = HeldReads(pool)  # the key sets' reads
        # which read the directories' change counts too: the card directory, used after them,
        # reads no count of its own then. The terminal records, used before them, read theirs
        # when due in a thread, as before: on the event loop (here) that read was quicker and
        # no longer gathered the messages arriving together, which then went to the ledger in
        # two groups instead of one (bench_workers: 0.99 statements per exchange, base 0.84).
        key_sets = PgKeyStore(pool, reads, cards=cards, estate=terminals)
        return Stores(
            url=url,
            ledger=ledger,
            terminals=terminals,
            cards=cards,
            # the daemon's bill transitions in the ledger's group commits (a card debit's
            # completion in the batch of its debit: post_and_call)
            medical_store=SqlMedicalStore(engine, pool=pool, pg_ledger=ledger),
            directory=SqlDirectory(engine),  # type: ignore[arg-type]
            reference=ReferenceData(engine),  # type: ignore[arg-type]
            card_status=Forgetting(PgCardStatus(pool), cards),
            reversal_queue=PgReversalQueue(pool),
            sequences=PgSequences(pool),
            pool=pool,
            bridge=bridge,
            _reads=reads,
            _session_sets=key_sets,
            _replies=replies,
        )
    except BaseException:
        for item in reversed(opened):
            with contextlib.suppress(Exception):
                await item.close()
        raise


# -- the back office's stores: what `medswitch dayend|review|statements|import ...` use ---------


class DatabaseMissing(LookupError):
    """A SQLite deployment whose file does not exist yet."""


@dataclass
class BackOffice:
    """The tables through SQLAlchemy Core (`engine`: an ``Engine`` on SQLite, the bridge's
    :class:`PgEngine` on PostgreSQL) and the ledger, opened on first use on the caller's loop."""

    url: str
    engine: Any  # sqlalchemy.Engine | PgEngine: the same Core statements run on either
    _ledger: Ledger | None = field(default=None, repr=False)
    _bridge: PgBridge | None = field(default=None, repr=False)

    @property
    def postgres(self) -> bool:
        return self._bridge is not None

    async def ledger(self) -> Ledger:
        if self._ledger is None:
            if self._bridge is None:
                path = Path(self.url.removeprefix("sqlite:///"))
                self._ledger = SqliteLedger.open(path, migrate=False)
            else:
                dsn, schema = split_url(self.url)
                self._ledger = await PgLedger.open(dsn, schema=schema, migrate=False)
        return self._ledger

    async def close(self) -> None:
        try:
            if self._ledger is not None:
                await self._ledger.close()
        finally:
            if self._bridge is not None:
                await asyncio.to_thread(self._bridge.close)
            else:
                self.engine.dispose()


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL; None for PostgreSQL; ValueError for anything else."""
    if is_postgres(url):
        return None
    if not url.startswith("sqlite:///"):
        raise ValueError(f"unsupported database URL {url.split('://')[0]}://...")
    return Path(url.removeprefix("sqlite:///"))


def check_exists(url: str) -> None:
    """DatabaseMissing for a SQLite file that is not there (a PostgreSQL schema is migrated)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise DatabaseMissing(f"{path} does not exist (medswitch demo init, or ledger migrate)")


async def open_back_office(url: str, *, create: bool = False) -> BackOffice:
    """The back office's stores on ``url``, its schema migrated to the newest revision first
    (the day-end and review tables on a database made before them); ``create``: a SQLite file
    that does not exist yet is made (else DatabaseMissing)."""
    path = sqlite_file(url)
    if not create:
        check_exists(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        upgrade_sqlite(path)
        return BackOffice(url, sqlite_engine(path))
    await migrate_postgres(url)
    bridge = await asyncio.to_thread(PgBridge, url, size=2)
    return BackOffice(url, PgEngine(bridge), _bridge=bridge)

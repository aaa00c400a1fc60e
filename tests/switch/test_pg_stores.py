"""The daemon's PostgreSQL stores, two "workers" at a time (two pools on one schema): session
keys, the shared retransmission cache, never-repeating numbers, card status and the blacklist
the card directory reads, the reversal queue. And the SQLite counters across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from hsm.errors import KeyExistsError, KeyNotFoundError
from hsm.interface import MacAlgorithm
from hsm.keyblock import StoredKey
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from ledger.core import QueuedReversal
from ledger.migrate import upgrade_sqlite
from messages.outcome import Outcome
from switch.cards import KEEP_S
from switch.database import Stores, open_stores
from switch.pg_stores import HeldReads, PgKeyStore, RoutedKeyStore
from switch.reply_store import SharedReplyCache
from switch.sequences import SqliteSequences
from switch.session_store import NO_KEYS
from switch.sessions import SharedSessions
from tests.support.daemon import make_pg_database, new_hsm, now
from tests.support.pg import DSN, fresh_schema

CARD = "6212340000000001"


def key(alias: str, version: int, usage: KeyUsage = KeyUsage.MAK) -> StoredKey:
    return StoredKey(alias, version, usage, "ABCDEF", "2026-11-25T00:00:00+00:00", "B0080...")


@asynccontextmanager
async def two_workers() -> AsyncIterator[tuple[Stores, Stores]]:
    async with fresh_schema() as schema:
        url = f"{DSN}?schema={schema}"
        await make_pg_database(url, {"POS00001": "pos"})
        first = await open_stores(url)
        try:
            second = await open_stores(url)
            try:
                yield first, second
            finally:
                await second.close()
        finally:
            await first.close()


def run(scenario: Callable[[Stores, Stores], Awaitable[None]]) -> None:
    async def main() -> None:
        async with two_workers() as (first, second):
            await scenario(first, second)

    asyncio.run(asyncio.wait_for(main(), timeout=60))


@pytest.mark.postgres
def test_session_keys_written_by_one_worker_are_used_by_the_other() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        assert first.pool is not None and second.pool is not None
        files = MemoryKeyStore()
        routed = RoutedKeyStore(PgKeyStore(first.pool), files)
        hsm = new_hsm(routed)
        tmk = await hsm.generate_key("tmk/POS00001", KeyUsage.TMK, now=now())
        assert await files.list("tmk/POS00001")  # ceremony keys stay in the file store
        assert await PgKeyStore(first.pool).list() == []
        mine = SharedSessions(files, PgKeyStore(first.pool))
        theirs = SharedSessions(files, PgKeyStore(second.pool))
        assert await theirs.get("POS00001") is None
        keys = replace(await hsm.sign_on(tmk, 60, "term/POS00001", now=now()), field62=b"")
        assert len(await PgKeyStore(second.pool).list()) == 3  # PIK, MAK, TDK in the database
        with pytest.raises(KeyExistsError):
            await routed.put(key("term/POS00001/MAK", 1))
        with pytest.raises(KeyNotFoundError):
            await routed.get("term/POS00001/MAK", 9)
        assert await mine.offer("POS00001", keys) == "000002"
        assert await theirs.get("POS00001") is None  # pending: nothing MACed under it yet
        mac = await hsm.generate_mac(keys.mak, MacAlgorithm.CUP_ECB, b"request")
        assert await theirs.proven("POS00001", hsm, b"request", mac) == keys
        assert await mine.get("POS00001") == keys  # promoted at one worker: current at both
        terminal = await first.terminals.get("POS00001", refresh=True)
        assert terminal is not None and terminal.batch == "000002"  # the batch moved with it
        forged = await hsm.sign_on(tmk, 60, "term/POS00001", now=now())
        assert await theirs.offer("POS00001", forged) == "000003"
        assert await mine.get("POS00001") == keys  # a sign-on alone changes nothing live
        terminal = await first.terminals.get("POS00001", refresh=True)
        assert terminal is not None and terminal.batch == "000002"
        await theirs.forget("POS00001")  # signed off here: for every worker
        assert await mine.get("POS00001") is None
        assert await mine.proven("POS00001", hsm, b"request", mac) is Outcome.RE_SIGN_ON
        assert await PgKeyStore(first.pool).key_sets("POS00001") == NO_KEYS

    run(scenario)


@pytest.mark.postgres
def test_key_set_reads_that_come_together_each_get_their_terminals_sets() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        assert first.pool is not None and second.pool is not None
        files = MemoryKeyStore()
        hsm = new_hsm(RoutedKeyStore(PgKeyStore(first.pool), files))
        tmk = await hsm.generate_key("tmk/POS00001", KeyUsage.TMK, now=now())
        keys = replace(await hsm.sign_on(tmk, 60, "term/POS00001", now=now()), field62=b"")
        store = PgKeyStore(second.pool)
        before = asyncio.gather(*(store.key_sets(t) for t in ("POS00001", "POS00009")))
        assert await before == [NO_KEYS, NO_KEYS]
        await SharedSessions(files, PgKeyStore(first.pool)).offer("POS00001", keys)
        # asked for after the other worker's commit: read after it, in one batch or the next
        found = await asyncio.gather(
            *(store.key_sets(t) for t in ("POS00001", "POS00009", "POS00001"))
        )
        assert found[0] == found[2] and found[0].pending == (keys,) and found[0].current is None
        assert found[1] == NO_KEYS

    run(scenario)


@pytest.mark.postgres
def test_a_reply_remembered_by_one_worker_answers_a_copy_at_the_other() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        mine, theirs = first.reply_cache(), second.reply_cache()
        assert isinstance(mine, SharedReplyCache) and isinstance(theirs, SharedReplyCache)
        assert await mine.earlier("k1", b"d" * 16) is None
        mine.begin("k1", b"d" * 16)
        assert await mine.remember(("k1", b"d" * 16), asyncio.sleep(0, result=b"reply")) == (
            b"reply"
        )
        assert await theirs.earlier("k1", b"d" * 16) == b"reply"
        assert await theirs.earlier("k1", b"e" * 16) is Outcome.DUPLICATE
        found = await asyncio.gather(*(theirs.earlier(f"n{i}", b"d" * 16) for i in range(50)))
        assert found == [None] * 50  # fifty lookups, batched, none known

    run(scenario)


@pytest.mark.postgres
def test_lookups_and_writes_that_come_together_go_in_one_statement() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        mine, theirs = first.reply_cache(), second.reply_cache()
        assert isinstance(mine, SharedReplyCache) and isinstance(theirs, SharedReplyCache)
        for n in range(3):
            mine.begin(f"w{n}", b"d" * 16)
            await mine.remember((f"w{n}", b"d" * 16), asyncio.sleep(0, result=b"r%d" % n))
        for n in range(3):
            theirs.begin(f"x{n}", b"e" * 16)

        async def reply(n: int) -> bytes:
            return await theirs.remember((f"x{n}", b"e" * 16), asyncio.sleep(0, result=b"x"))

        # one turn: three lookups (two known at the other worker) and three writes
        together = await asyncio.gather(
            *(theirs.earlier(f"w{n}", b"d" * 16) for n in (0, 1)),
            theirs.earlier("w9", b"d" * 16),
            *(reply(n) for n in range(3)),
        )
        assert together == [b"r0", b"r1", None, b"x", b"x", b"x"]
        assert [await mine.earlier(f"x{n}", b"e" * 16) for n in range(3)] == [b"x"] * 3

    run(scenario)


@pytest.mark.postgres
def test_a_lost_reply_connection_is_made_again_by_the_next_batch() -> None:
    """The cache's own connection terminated (and the backend gone): the next batch makes it
    again and loses nothing (a batch whose statement meets the loss: tests/switch/
    test_reply_store.py, where it can be made to happen)."""

    async def scenario(first: Stores, second: Stores) -> None:
        mine, theirs = first.reply_cache(), second.reply_cache()
        assert isinstance(mine, SharedReplyCache) and isinstance(theirs, SharedReplyCache)
        assert second.pool is not None
        mine.begin("k1", b"d" * 16)
        await mine.remember(("k1", b"d" * 16), asyncio.sleep(0, result=b"reply"))
        pid = theirs.link.connection.get_server_pid()
        assert await second.pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        gone = "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)"
        for _ in range(100):  # the signal is asynchronous: the backend gone before the batch
            if await second.pool.fetchval(gone, pid) and theirs.link.connection.is_closed():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the backend did not end")
        theirs.begin("k2", b"d" * 16)
        after = await asyncio.gather(
            theirs.earlier("k1", b"d" * 16),
            theirs.remember(("k2", b"d" * 16), asyncio.sleep(0, result=b"two")),
        )
        assert after == [b"reply", b"two"]
        assert theirs.link.reconnects == 1
        assert await mine.earlier("k2", b"d" * 16) == b"two"  # written on the new connection

    run(scenario)


@pytest.mark.postgres
def test_sequences_never_repeat_across_workers() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        drawn = await asyncio.gather(
            *(s.sequences.next("rrn") for s in (first, second) for _ in range(100))
        )
        assert len(set(drawn)) == 200
        with pytest.raises(ValueError):
            await first.sequences.next("nothing")

    run(scenario)


def test_sqlite_counters_never_repeat_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    upgrade_sqlite(path)

    async def draw(count: int) -> list[int]:
        sequences = SqliteSequences(path, block=10)
        return [await sequences.next("stan") for _ in range(count)]

    first = asyncio.run(draw(25))
    second = asyncio.run(draw(5))  # a restart: the rest of the last block is skipped
    assert first == list(range(1, 26))
    assert second == list(range(31, 36))


async def one_card(stores: Stores) -> None:
    """Card 6212340000000001 (serial 3100000000000001) of cardholder H1 of unit U1."""
    assert stores.pool is not None
    await stores.pool.execute(
        "INSERT INTO institutions (id, kind, name) VALUES ('U1', 'employer_unit', 'u')"
    )
    await stores.pool.execute(
        "INSERT INTO cardholders (id, ssn, name, category, unit_id) VALUES"
        " ('H1', 'S1', 'n', 'employed', 'U1')"
    )
    await stores.pool.execute(
        "INSERT INTO cards (card_no, application_serial, cardholder_id, expiry) VALUES"
        " ('6212340000000001', '3100000000000001', 'H1', '2031-12-31')"
    )


@pytest.mark.postgres
def test_a_loss_report_reaches_the_blacklist_the_terminals_download() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        await one_card(first)
        assert second.cards.blacklist_version() == 0
        lost = await first.card_status.report_lost("6212340000000001", 1)
        assert (lost.status_before, lost.blacklist_version) == ("active", 1)
        again = await first.card_status.report_lost("6212340000000001", 2)
        assert (again.status_before, again.blacklist_version) == ("lost", 0)
        card = second.cards.get("6212340000000001")
        assert card is not None and card.status == "lost"
        back = await first.card_status.unloss("6212340000000001")
        assert (back.status_before, back.blacklist_version) == ("lost", 2)
        assert second.cards.blacklist_version() == 2
        assert second.cards.blacklist_changes(0, 10) == [
            (1, "A", "3100000000000001"),
            (2, "D", "3100000000000001"),
        ]
        assert (await first.card_status.unloss("6299")).status_before is None

    run(scenario)


@pytest.mark.postgres
def test_a_worker_keeps_card_records_until_another_changes_the_directory() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        await one_card(first)
        for stores in (first, second):
            card = stores.cards.get("6212340000000001")
            assert card is not None and card.status == "active"
        await first.card_status.report_lost("6212340000000001", 1)
        mine = first.cards.get("6212340000000001")  # its own register's change: at once
        assert mine is not None and mine.status == "lost"
        await asyncio.sleep(KEEP_S * 2)  # the other worker reads the moved count at its next use
        theirs = second.cards.get("6212340000000001")
        assert theirs is not None and theirs.status == "lost"

    run(scenario)


@pytest.mark.postgres
def test_held_reads_keep_one_connection_between_reads_and_give_it_back() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        pool = first.pool
        assert pool is not None and pool.get_idle_size() == pool.get_size()
        reads = HeldReads(pool)
        ((pid,),) = await reads.fetch("SELECT pg_backend_pid()")
        assert await reads.fetch("SELECT pg_backend_pid()") == [(pid,)]  # the same backend
        assert pool.get_idle_size() == pool.get_size() - 1  # held between reads
        with pytest.raises(asyncpg.DivisionByZeroError):
            await reads.fetch("SELECT 1 / $1::int", 0)
        assert pool.get_idle_size() == pool.get_size()  # a failed read gives it back
        both = await asyncio.gather(*(reads.fetch("SELECT $1::int", n) for n in range(3)))
        assert both == [[(0,)], [(1,)], [(2,)]]  # in turn, on the one connection
        ((pid,),) = await reads.fetch("SELECT pg_backend_pid()")
        assert second.pool is not None
        await second.pool.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)  # the lost connection seen: the next read is on a new one
        ((other,),) = await reads.fetch("SELECT pg_backend_pid()")
        assert other != pid
        await reads.close()
        assert pool.get_idle_size() == pool.get_size()  # back before the pool closes
        assert await reads.fetch("SELECT 1") == [(1,)]  # a read still running past close()
        assert pool.get_idle_size() == pool.get_size()  # holds nothing again

    run(scenario)


@pytest.mark.postgres
def test_a_kept_bridge_connection_reads_on_one_backend_and_gives_it_back() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        bridge = first.bridge
        assert bridge is not None

        def in_use() -> int:
            return int(bridge.pool.get_size() - bridge.pool.get_idle_size())

        def reads() -> list[object]:
            kept = bridge.connection(keep=True)
            seen: list[object] = [kept.execute("SELECT pg_backend_pid()").fetchone()]
            seen += [kept.execute("SELECT pg_backend_pid()").fetchone(), in_use()]
            with pytest.raises(asyncpg.DivisionByZeroError):
                kept.execute("SELECT 1 / ?::int", (0,))
            seen.append(in_use())  # a failed statement gave it back
            kept.execute("SELECT 1")
            kept.close()
            seen.append(in_use())
            kept.execute("SELECT 1")  # a statement past close() keeps nothing
            return [*seen, in_use()]

        first.cards.close()  # the daemon's card directory keeps one too: given back
        pid, again, held, failed, closed, after = await asyncio.to_thread(reads)
        assert (again, held, failed, closed, after) == (pid, 1, 0, 0, 0)

    run(scenario)


@pytest.mark.postgres
def test_the_reversal_queue_delivery_state() -> None:
    async def scenario(first: Stores, second: Stores) -> None:
        item = QueuedReversal("rev-1", "b1", "bank|01020000|1125120000|000001|02", 500)
        assert await first.ledger.queue_reversal(item)
        pending = await second.reversal_queue.pending("b1")
        assert [(p.item, p.attempts) for p in pending] == [(item, 0)]
        await second.reversal_queue.attempted("rev-1", acknowledged=False, next_at_us=1)
        assert (await first.reversal_queue.pending("b1"))[0].attempts == 1
        await first.reversal_queue.attempted("rev-1", acknowledged=True, next_at_us=0)
        assert await second.reversal_queue.pending("b1") == []

    run(scenario)


class Statements:
    """The statements the card directory runs on its kept bridge connection."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.seen: list[str] = []

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        self.seen.append(sql)
        return self.wrapped.execute(sql, parameters)

    def close(self) -> None:
        self.wrapped.close()


@pytest.mark.postgres
def test_key_set_reads_carry_the_directories_change_counts() -> None:
    """A message's key set read tells the card directory and the terminal records whether
    their change counts moved: once due, they read no count of their own after it — kept
    while it stands, forgotten when another worker's change moved it."""

    async def scenario(first: Stores, second: Stores) -> None:
        await one_card(first)
        cards, terminals = first.cards, first.terminals
        cards._connection = directory = Statements(cards._connection)
        cards._keep_s = terminals._keep_s = 60.0  # due only when set so below
        assert (card := cards.get(CARD)) is not None and card.status == "active"
        assert (terminal := await terminals.get("POS00001")) is not None and terminal.active
        cards._checked = terminals._checked = 0.0  # both due
        assert terminals.kept("POS00001") is None
        await first.session_sets().key_sets("POS00001")  # a message's, at another terminal
        assert terminals.kept("POS00001") is terminal  # unmoved: the kept record stands
        read = len(directory.seen)
        assert cards.get(CARD) == card
        assert directory.seen[read:] == []  # no count read by the directory itself
        await second.card_status.report_lost(CARD, 1)  # the other worker's register
        assert second.pool is not None
        await second.pool.execute("UPDATE terminals SET status = 'disabled'")
        assert cards.get(CARD) == card and terminals.kept("POS00001") is terminal  # not due
        await first.session_sets().key_sets("POS00009")
        assert terminals.kept("POS00001") is None  # forgotten: read afresh at its next use
        assert (await terminals.get("POS00001")).status == "disabled"  # type: ignore[union-attr]
        lost = cards.get(CARD)
        assert lost is not None and lost.status == "lost"
        assert not any("directory_version" in sql for sql in directory.seen[read:])

    run(scenario)

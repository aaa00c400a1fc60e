"""The shared reply cache's batching on its own connection, without a database: a connection
that answers when told to."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from ledger.pg_connection import Healing
from messages.outcome import Outcome
from switch.reply_store import BOTH, READ, WRITE, Batcher, SharedReplyCache

DIGEST = b"d" * 16


class Held:
    """An asyncpg connection's ``fetch`` and ``execute``, each answered when ``go`` is set."""

    def __init__(self, rows: dict[str, bytes]) -> None:
        self.rows = rows
        self.go = asyncio.Event()
        self.statements: list[tuple[str, int, int]] = []  # (which, lookups, writes)

    def is_closed(self) -> bool:
        return False

    async def fetch(self, sql: str, *args: Any) -> list[tuple[str, bytes]]:
        keys = args[0] if sql == READ else args[4]
        self.statements.append(("both" if sql == BOTH else "read", len(keys), len(args[0])))
        await self.go.wait()
        return [(key, self.rows[key]) for key in keys if key in self.rows]

    async def execute(self, sql: str, *args: Any) -> str:
        assert sql == WRITE
        self.statements.append(("write", 0, len(args[0])))
        await self.go.wait()
        return "INSERT 0 1"

    async def close(self, timeout: float) -> None:
        pass


async def never() -> Any:
    raise AssertionError("not connected again")


def cache(connection: Held) -> SharedReplyCache:
    return SharedReplyCache(Healing(connection, never))


def test_lookups_that_come_together_are_one_statement_and_a_cancelled_one_waits_for_it() -> None:
    async def main() -> None:
        connection = Held({"k1": DIGEST + b"one"})
        replies = cache(connection)
        lookups = [asyncio.ensure_future(replies.earlier(k, DIGEST)) for k in ("k1", "k2", "k3")]
        await asyncio.sleep(0.01)
        assert connection.statements == [("read", 3, 3)]
        lookups[2].cancel()  # its exchange went away: the batch is the others' still
        await asyncio.sleep(0.01)
        assert not lookups[2].done()  # it wakes with the batch's answer
        connection.go.set()
        assert await asyncio.gather(*lookups[:2]) == [b"one", None]
        with pytest.raises(asyncio.CancelledError):
            await lookups[2]
        assert await replies.earlier("k1", b"e" * 16) is Outcome.DUPLICATE  # now in memory
        assert len(connection.statements) == 1

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_writes_queued_while_a_statement_runs_go_together_with_lookups_in_the_next() -> None:
    async def main() -> None:
        connection = Held({})
        replies = cache(connection)
        first = asyncio.ensure_future(replies.earlier("a", DIGEST))
        await asyncio.sleep(0.01)  # its statement is running
        replies.begin("b", DIGEST)
        replies.begin("c", DIGEST)
        sent = [
            asyncio.ensure_future(replies.remember((k, DIGEST), asyncio.sleep(0, result=b"r")))
            for k in ("b", "c")
        ]
        second = asyncio.ensure_future(replies.earlier("d", DIGEST))
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in sent)  # not sent before they are written
        connection.go.set()
        assert await asyncio.gather(first, second, *sent) == [None, None, b"r", b"r"]
        assert connection.statements == [("read", 1, 1), ("both", 1, 2)]

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_callers_of_a_batch_whose_task_is_cancelled_hear_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop's end cancels the cache's task mid-statement: its lookups answer "not found"
    and its replies go unwritten, logged, rather than waiting forever."""

    async def main() -> None:
        connection = Held({"k1": DIGEST + b"one"})
        replies = cache(connection)
        replies.begin("w", DIGEST)
        lookup = asyncio.ensure_future(replies.earlier("k1", DIGEST))
        sent = asyncio.ensure_future(replies.remember(("w", DIGEST), asyncio.sleep(0, result=b"r")))
        await asyncio.sleep(0.01)
        draining = replies._draining
        assert draining is not None
        draining.cancel()
        assert await lookup is None
        assert await sent == b"r"
        assert "response cache: 1 lookups and 1 writes failed" in caplog.text

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_what_was_queued_behind_a_cancelled_batch_hears_it_and_later_calls_drain_again() -> None:
    """Lookups and writes queued while the cancelled statement ran fail with it (none waits
    forever), and the next lookup starts a statement of its own."""

    async def main() -> None:
        connection = Held({"k1": DIGEST + b"one"})
        replies = cache(connection)
        first = asyncio.ensure_future(replies.earlier("a", DIGEST))
        await asyncio.sleep(0.01)  # its statement is running
        queued = asyncio.ensure_future(replies.earlier("b", DIGEST))
        replies.begin("w", DIGEST)
        sent = asyncio.ensure_future(replies.remember(("w", DIGEST), asyncio.sleep(0, result=b"r")))
        await asyncio.sleep(0.01)
        draining = replies._draining
        assert draining is not None
        draining.cancel()
        assert await asyncio.gather(first, queued, sent) == [None, None, b"r"]
        connection.go.set()
        assert await replies.earlier("k1", DIGEST) == b"one"  # a statement of its own
        assert connection.statements[-1] == ("read", 1, 1)

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_a_task_cancelled_before_its_first_step_is_started_again() -> None:
    async def main() -> None:
        connection = Held({"k1": DIGEST + b"one"})
        connection.go.set()
        replies = cache(connection)
        lookup = asyncio.ensure_future(replies.earlier("k1", DIGEST))
        await asyncio.sleep(0)  # the lookup queued and its task made, not yet run
        draining = replies._draining
        assert draining is not None
        draining.cancel()
        assert await lookup is None  # its batch failed with the task
        assert await replies.earlier("k1", DIGEST) == b"one"

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_after_close_the_cache_keeps_to_memory() -> None:
    async def main() -> None:
        connection = Held({"k1": DIGEST + b"one"})
        connection.go.set()
        replies = cache(connection)
        await replies.close()
        assert await replies.earlier("k1", DIGEST) is None  # no statement, no new connection
        replies.begin("w", DIGEST)
        assert await replies.remember(("w", DIGEST), asyncio.sleep(0, result=b"r")) == b"r"
        assert await replies.earlier("w", DIGEST) == b"r"  # from memory
        assert connection.statements == []

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_a_batcher_cancelled_before_its_first_step_fails_its_callers_and_starts_again() -> None:
    async def main() -> None:
        async def run(arguments: list[int]) -> list[int]:
            return [2 * a for a in arguments]

        batcher: Batcher[int, int] = Batcher(run)
        first = batcher(1)
        task = batcher._task
        assert task is not None
        task.cancel()
        with pytest.raises(ConnectionError):
            await first
        assert await batcher(2) == 4

    asyncio.run(asyncio.wait_for(main(), timeout=10))


class Lost(Held):
    """A connection whose statements find it lost, as a terminated backend's do."""

    def __init__(self) -> None:
        super().__init__({})
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    async def fetch(self, sql: str, *args: Any) -> list[tuple[str, bytes]]:
        self.closed = True
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )

    async def execute(self, sql: str, *args: Any) -> str:
        await self.fetch(sql)
        return ""


def test_a_batch_that_meets_a_lost_connection_costs_only_its_lookups_and_the_next_connects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        fresh = Held({"k1": DIGEST + b"one"})
        fresh.go.set()

        async def connect() -> Any:
            return fresh

        replies = SharedReplyCache(Healing(Lost(), connect))
        replies.begin("w", DIGEST)
        during = await asyncio.gather(
            replies.earlier("k1", DIGEST),
            replies.remember(("w", DIGEST), asyncio.sleep(0, result=b"r")),
        )
        assert during == [None, b"r"]  # handled afresh; the reply sent unwritten
        assert "response cache: 1 lookups and 1 writes failed" in caplog.text
        assert await replies.earlier("k1", DIGEST) == b"one"  # on the connection made again
        assert replies.link.reconnects == 1

    asyncio.run(asyncio.wait_for(main(), timeout=10))

"""The bank links' stores behave the same on SQLite and PostgreSQL: one behaviour table run
against the card status register (loss report, unloss, cancel, replacement, the ended cards due
for the sweep) and the reversal queue's delivery state of each backend, as
``switch.database.open_stores`` opens them for the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ledger.core import QueuedReversal, ReviewItem
from switch.bank.cards import CardStatusStore
from switch.bank.saf import Depth, ReversalQueue
from switch.database import Stores, open_stores
from tests.support.daemon import BACKENDS, make_database, make_pg_database
from tests.support.pg import DSN, fresh_schema

CARDS = {  # card_no: (application serial, cardholder)
    "6212340000000001": ("3100000000000001", "H1"),
    "6212340000000002": ("3100000000000002", "H1"),
    "6212340000000003": ("3100000000000003", "H2"),
    "6212340000000004": ("3100000000000004", "H1"),
    "6212340000000005": ("3100000000000005", "H2"),
}
SETUP = [
    "INSERT INTO institutions (id, kind, name) VALUES ('U1', 'employer_unit', 'u')",
    "INSERT INTO cardholders (id, ssn, name, category, unit_id) VALUES"
    " ('H1', 'S1', 'n', 'employed', 'U1'), ('H2', 'S2', 'm', 'employed', 'U1')",
    *(
        "INSERT INTO cards (card_no, application_serial, cardholder_id, expiry) VALUES"
        f" ('{card}', '{serial}', '{holder}', '2031-12-31')"
        for card, (serial, holder) in CARDS.items()
    ),
]

# (operation, card, argument, at µs) → (status before, blacklist version, new card problem)
TABLE: list[tuple[str, str, str, int, tuple[str | None, int, str]]] = [
    ("report_lost", "6212340000000001", "", 10, ("active", 1, "")),
    ("report_lost", "6212340000000001", "", 11, ("lost", 0, "")),  # already lost: nothing
    ("unloss", "6212340000000001", "", 0, ("lost", 2, "")),
    ("unloss", "6212340000000001", "", 0, ("active", 0, "")),  # not lost: nothing
    ("unloss", "6299000000000000", "", 0, (None, 0, "")),  # no such card
    ("report_lost", "6212340000000003", "", 20, ("active", 3, "")),
    ("cancel", "6212340000000003", "", 30, ("lost", 4, "")),  # a lost card can be cancelled
    ("cancel", "6212340000000003", "", 31, ("cancelled", 0, "")),  # never twice
    ("report_lost", "6212340000000003", "", 32, ("cancelled", 0, "")),
    ("replace", "6212340000000001", "6212340000000001", 40, ("active", 0, "unknown")),
    ("replace", "6212340000000001", "6299000000000000", 40, ("active", 0, "unknown")),
    ("replace", "6212340000000001", "6212340000000005", 40, ("active", 0, "other_holder")),
    ("replace", "6212340000000001", "6212340000000003", 40, ("active", 0, "other_holder")),
    ("report_lost", "6212340000000004", "", 41, ("active", 5, "")),
    ("replace", "6212340000000001", "6212340000000004", 42, ("active", 0, "not_active")),
    ("replace", "6212340000000001", "6212340000000002", 50, ("active", 6, "")),
    ("replace", "6212340000000001", "6212340000000002", 51, ("replaced", 0, "")),
    ("cancel", "6299000000000000", "", 60, (None, 0, "")),
]


@asynccontextmanager
async def stores_on(backend: str, tmp: Path) -> AsyncIterator[Stores]:
    if backend == "postgres":
        async with fresh_schema() as schema:
            url = f"{DSN}?schema={schema}"
            await make_pg_database(url, {})
            stores = await open_stores(url)
            try:
                assert stores.pool is not None
                for sql in SETUP:
                    await stores.pool.execute(sql)
                yield stores
            finally:
                await stores.close()
        return
    make_database(tmp / "medswitch.db", {})
    stores = await open_stores(f"sqlite:///{tmp / 'medswitch.db'}")
    try:
        with contextlib.closing(sqlite3.connect(tmp / "medswitch.db")) as connection, connection:
            for sql in SETUP:
                connection.execute(sql)
        yield stores
    finally:
        await stores.close()


async def apply(cards: CardStatusStore, operation: str, card: str, arg: str, at_us: int) -> Any:
    if operation == "report_lost":
        return await cards.report_lost(card, at_us)
    if operation == "unloss":
        return await cards.unloss(card)
    if operation == "cancel":
        return await cards.cancel(card, at_us)
    return await cards.replace(card, arg, at_us)


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout=60))


@pytest.mark.parametrize("backend", BACKENDS)
def test_card_status_behaves_alike_on_both_backends(backend: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with stores_on(backend, tmp_path) as stores:
            cards: CardStatusStore = stores.card_status
            for step, (operation, card, arg, at_us, expected) in enumerate(TABLE):
                change = await apply(cards, operation, card, arg, at_us)
                found = (change.status_before, change.blacklist_version, change.new_card_problem)
                assert found == expected, (step, operation, card)
            assert await cards.ended_before(29) == []
            assert await cards.ended_before(30) == [("3100000000000003", "H2", 30)]
            assert await cards.ended_before(10**6) == [
                ("3100000000000003", "H2", 30),
                ("3100000000000001", "H1", 50),
            ]
            assert stores.cards.blacklist_version() == 6
            assert stores.cards.blacklist_changes(0, 20) == [
                (1, "A", "3100000000000001"),
                (2, "D", "3100000000000001"),
                (3, "A", "3100000000000003"),
                (4, "A", "3100000000000003"),
                (5, "A", "3100000000000004"),
                (6, "A", "3100000000000001"),
            ]
            replaced = stores.cards.get("6212340000000001")
            assert replaced is not None and replaced.status == "replaced"

    run(scenario())


@pytest.mark.parametrize("backend", BACKENDS)
def test_reversal_queue_behaves_alike_on_both_backends(backend: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with stores_on(backend, tmp_path) as stores:
            queue: ReversalQueue = stores.reversal_queue
            items = [
                QueuedReversal(f"rev-{n}", bank, f"bank|01020000|1125120000|00000{n}|02", 100 * n)
                for n, bank in ((1, "b1"), (2, "b2"), (3, "b1"))
            ]
            for item in items:
                assert await stores.ledger.queue_reversal(item)
            assert not await stores.ledger.queue_reversal(items[0])  # once per key
            pending = await queue.pending("b1")
            assert [(p.item, p.attempts) for p in pending] == [(items[0], 0), (items[2], 0)]
            assert [p.item for p in await queue.pending("b1", limit=1)] == [items[0]]
            await queue.sending("rev-1", "000007", "1207150000", 1)
            await queue.attempted("rev-1", acknowledged=False, next_at_us=5)
            await queue.sending("rev-1", "000009", "1207150101", 6)  # the first sending's kept
            await queue.attempted("rev-1", acknowledged=False, next_at_us=9)
            first = (await queue.pending("b1"))[0]
            assert (first.attempts, first.next_at_us) == (2, 9)
            assert (first.stan, first.transmitted) == ("000007", "1207150000")
            assert [p.attempts for p in await queue.pending("b1")] == [2, 0]
            depth = await queue.depth("b1")
            assert depth.count == 2 and depth.oldest_at_us == first.created_at_us > 0
            await queue.attempted("rev-1", acknowledged=True, next_at_us=0)
            assert [p.item.key for p in await queue.pending("b1")] == ["rev-3"]
            assert [p.item.key for p in await queue.pending("b2")] == ["rev-2"]
            assert await queue.pending("b9") == []
            assert await queue.depth("b9") == Depth(0, None)
            review = ReviewItem("r" * 32, "reversal_undelivered", items[2].reference, 300, "why")
            assert await queue.give_up("rev-3", review, 10)
            assert not await queue.give_up("rev-3", review, 11)  # once
            assert await queue.pending("b1") == [] and (await queue.depth("b1")).count == 0
            assert await stores.ledger.reviews() == [review]

    run(scenario())

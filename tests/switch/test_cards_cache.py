"""The SQLite card lookups' cache: hits counted in statements, and never a stale status once
another connection or process has committed (``PRAGMA data_version``)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import uvloop

from ledger.migrate import upgrade_sqlite
from messages.outcome import Outcome
from switch.cards import SqliteCards
from tests.switch.daemon_fixture import Daemon
from tests.switch.kiosk import issue_card, kiosk_load
from tests.switch.test_loads import KIOSK, run, signed_on_kiosk

CARD = "6212340000000001"
PSAM_NO = "000000000042"


def make_file(path: Path) -> None:
    upgrade_sqlite(path)
    with sqlite3.connect(path) as db:  # foreign keys unchecked: only these rows matter here
        db.execute(
            "INSERT INTO cards (card_no, application_serial, cardholder_id, status, expiry)"
            " VALUES (?, '0001', 'h1', 'active', '2030-12-31')",
            (CARD,),
        )
        db.execute(
            "INSERT INTO psams (serial, psam_terminal_no, institution_id)"
            " VALUES ('P1', ?, 'hospital-a')",
            (PSAM_NO,),
        )


def traced(cards: SqliteCards) -> list[str]:
    statements: list[str] = []
    cards.cache._connection.set_trace_callback(statements.append)
    return statements


def in_another_process(path: Path, statement: str) -> None:
    """Commit ``statement`` from a separate Python process (as the CLI would)."""
    code = (
        "import sqlite3, sys\n"
        "with sqlite3.connect(sys.argv[1]) as db:\n"
        "    db.execute(sys.argv[2])\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code, str(path), statement], check=True, timeout=60)


def selects(statements: list[str], table: str) -> int:
    return sum(f"FROM {table}" in s for s in statements)


def test_lookups_in_one_loop_iteration_cost_one_version_check_and_one_query(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    make_file(path)
    cards = SqliteCards(path)
    statements = traced(cards)

    async def iteration() -> None:  # no await: all of it runs in one loop iteration
        for _ in range(10):
            record = cards.get(CARD)
            assert record is not None and record.status == "active"
            assert cards.psam_institution(PSAM_NO) == "hospital-a"
            assert cards.get("6212349999999999") is None  # an unknown card is cached too
            assert cards.blacklist_version() == 0

    asyncio.run(iteration())
    assert statements.count("PRAGMA data_version") == 1
    assert (selects(statements, "cards"), selects(statements, "psams")) == (2, 1)
    assert selects(statements, "blacklist") == 1
    assert (cards.cache.counts.hits, cards.cache.counts.misses) == (36, 4)
    cards.close()


def test_later_iterations_check_the_version_and_reuse_the_records(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    make_file(path)
    cards = SqliteCards(path)
    statements = traced(cards)

    async def iterations() -> None:
        for _ in range(5):
            assert cards.get(CARD) is not None
            await asyncio.sleep(0)  # the next loop iteration
            await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(iterations())
    assert selects(statements, "cards") == 1
    assert 5 <= statements.count("PRAGMA data_version") <= 10
    cards.close()


def test_a_commit_by_another_process_is_seen_by_the_next_lookup(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    make_file(path)
    cards = SqliteCards(path)
    statements = traced(cards)

    async def scenario() -> None:
        record = cards.get(CARD)
        assert record is not None and record.status == "active"
        assert cards.psam_institution(PSAM_NO) == "hospital-a"
        assert cards.blacklist_version() == 0
        await asyncio.to_thread(
            in_another_process,
            path,
            f"UPDATE cards SET status = 'lost' WHERE card_no = '{CARD}'",
        )
        record = cards.get(CARD)
        assert record is not None and record.status == "lost"
        await asyncio.to_thread(
            in_another_process,
            path,
            "INSERT INTO blacklist (application_serial, reason, version, added_at_us)"
            " VALUES ('0001', 'lost', 7, 0)",
        )
        assert cards.blacklist_version() == 7
        await asyncio.to_thread(
            in_another_process,
            path,
            f"UPDATE psams SET institution_id = 'hospital-b' WHERE psam_terminal_no = '{PSAM_NO}'",
        )
        assert cards.psam_institution(PSAM_NO) == "hospital-b"

    asyncio.run(scenario())
    assert selects(statements, "cards") == 2 and cards.cache.counts.invalidations == 3
    cards.close()


def test_off_the_loop_every_lookup_checks_the_version(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    make_file(path)
    cards = SqliteCards(path)
    statements = traced(cards)
    for _ in range(3):
        assert cards.get(CARD) is not None
    assert statements.count("PRAGMA data_version") == 3 and selects(statements, "cards") == 1
    with sqlite3.connect(path) as db:
        db.execute("UPDATE cards SET status = 'cancelled' WHERE card_no = ?", (CARD,))
    record = cards.get(CARD)
    assert record is not None and record.status == "cancelled"
    cards.invalidate()
    assert cards.get(CARD) is not None and selects(statements, "cards") == 3
    cards.close()


def test_the_running_daemon_refuses_a_card_lost_by_another_process_at_its_next_use(
    tmp_path: Path,
) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            reply, _ = await kiosk_load(kiosk, conn, on_file, 100)
            assert reply.response_code == Outcome.APPROVED.code  # the card is now cached
            await asyncio.to_thread(
                in_another_process,
                daemon.home / "medswitch.db",
                f"UPDATE cards SET status = 'lost' WHERE card_no = '{on_file.card_no}'",
            )
            reply, _ = await kiosk_load(kiosk, conn, on_file, 100)
            assert reply.response_code == Outcome.LOST_CARD.code

    run(tmp_path, scenario)

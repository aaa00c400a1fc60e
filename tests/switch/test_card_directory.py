"""The daemon's card directory keeps the cards and PSAM owners it read, and forgets them all once
the directory's change count moves — whoever changed it — or at once after a change made
through the daemon's own status register."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ledger.migrate import upgrade_sqlite
from routing.bank_context import StatusChange
from switch import cards as cards_module
from switch.cards import Forgetting, SqlCards, SqliteCards

CARD = "6212340000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "medswitch.db"
    upgrade_sqlite(path)
    with sqlite3.connect(path) as db:
        for institution in ("H1", "H2"):
            db.execute(
                "INSERT INTO institutions (id, kind, name, level)"
                f" VALUES ('{institution}', 'hospital', 'H', 3)"
            )
        db.execute(
            "INSERT INTO terminals (id, institution_id, kind) VALUES ('P0000001', 'H1', 'pos')"
        )
        db.execute(
            "INSERT INTO cardholders (id, ssn, name, category, unit_id)"
            " VALUES ('c1', '110101199001010011', 'A', 'employee', 'H1')"
        )
        db.execute(
            "INSERT INTO cards (card_no, application_serial, cardholder_id, key_version, status,"
            " expiry) VALUES (?, '3100000000000001', 'c1', 1, 'active', '2035-01-01')",
            (CARD,),
        )
        db.execute(
            "INSERT INTO psams (psam_terminal_no, institution_id, terminal_id, serial)"
            " VALUES ('000000000001', 'H1', 'P0000001', 'S1')"
        )
    return path


def elsewhere(path: Path, statement: str) -> None:
    """A change committed by another connection (another process, for the directory)."""
    with sqlite3.connect(path) as db:
        db.execute(statement)


class Counting:
    """A connection that counts the statements run through it."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.statements: list[str] = []

    def execute(self, statement: str, parameters: Any = ()) -> sqlite3.Cursor:
        self.statements.append(statement.split()[-1] if "directory_version" not in statement
                               else "version")  # fmt: skip
        return self.connection.execute(statement, parameters)

    def close(self) -> None:
        self.connection.close()


def test_kept_records_are_used_until_the_change_count_moves(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(cards_module.time, "monotonic", clock)
    counting = Counting(sqlite3.connect(database))
    directory = SqlCards(counting, keep_s=0.005)
    first = directory.get(CARD)
    assert first is not None and first.status == "active"
    assert directory.psam_institution("000000000001") == "H1"
    elsewhere(database, f"UPDATE cards SET status = 'lost' WHERE card_no = '{CARD}'")
    elsewhere(database, "UPDATE psams SET institution_id = 'H2' WHERE serial = 'S1'")
    read = len(counting.statements)
    # Within keep_s the kept records are trusted: nothing is read.
    assert directory.get(CARD) == first
    assert directory.psam_institution("000000000001") == "H1"
    assert len(counting.statements) == read
    clock.now += 0.006  # keep_s has passed: the count has moved, everything is read afresh
    again = directory.get(CARD)
    assert again is not None and again.status == "lost"
    assert directory.psam_institution("000000000001") == "H2"
    clock.now += 0.006  # the count has not moved since: only the count is read
    read = len(counting.statements)
    assert directory.get(CARD) == again
    assert directory.psam_institution("000000000001") == "H2"
    assert counting.statements[read:] == ["version"]
    directory.close()


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE cards SET status = 'lost' WHERE card_no = '{CARD}'",
        f"DELETE FROM cards WHERE card_no = '{CARD}'",
        "INSERT INTO blacklist (application_serial, reason, version, added_at_us)"
        " VALUES ('3100000000000001', 'lost', 1, 0)",
        "INSERT INTO psams (psam_terminal_no, institution_id, terminal_id, serial)"
        " VALUES ('000000000002', 'H1', 'P0000001', 'S2')",
        "DELETE FROM psams WHERE serial = 'S1'",
    ],
)
def test_every_change_of_cards_psams_or_blacklist_moves_the_count(
    database: Path, statement: str
) -> None:
    with sqlite3.connect(database) as db:
        before = db.execute("SELECT version FROM directory_version").fetchone()[0]
    elsewhere(database, statement)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT version FROM directory_version").fetchone()[0] > before


def test_without_keep_every_use_reads_the_database(database: Path) -> None:
    directory = SqliteCards(database)
    assert directory.get(CARD) is not None
    elsewhere(database, f"UPDATE cards SET status = 'lost' WHERE card_no = '{CARD}'")
    lost = directory.get(CARD)
    assert lost is not None and lost.status == "lost"
    directory.close()


class Register:
    """A status register that changes the card through its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def report_lost(self, card_no: str, at_us: int) -> StatusChange:
        elsewhere(self.path, f"UPDATE cards SET status = 'lost' WHERE card_no = '{card_no}'")
        return StatusChange("active", 7)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not used here: {name}")


def test_a_change_through_the_daemons_register_is_seen_at_once(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cards_module.time, "monotonic", Clock())  # time stands still
    directory = SqliteCards(database, keep_s=0.005)
    kept = directory.get(CARD)
    assert kept is not None and kept.status == "active"
    change = asyncio.run(Forgetting(Register(database), directory).report_lost(CARD, 0))
    assert change.blacklist_version == 7
    now = directory.get(CARD)
    assert now is not None and now.status == "lost"
    directory.close()


def test_a_count_read_elsewhere_stands_for_the_directorys_own(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change count handed in (``saw_count``: on PostgreSQL, read with a message's key
    sets) is trusted ``keep_s`` from when its statement was sent, as one read here: a moved
    count forgets what is kept, an unmoved one saves the directory's own read."""
    clock = Clock()
    monkeypatch.setattr(cards_module.time, "monotonic", clock)
    counting = Counting(sqlite3.connect(database))
    directory = SqlCards(counting, keep_s=0.005)
    first = directory.get(CARD)
    assert first is not None and first.status == "active"
    (version,) = counting.connection.execute("SELECT version FROM directory_version").fetchone()
    clock.now += 0.006
    directory.saw_count(version, clock.now - 0.001)  # unmoved, sent a moment ago
    read = len(counting.statements)
    assert directory.get(CARD) == first
    assert counting.statements[read:] == []  # neither the count nor the card read here
    clock.now += 0.0045  # 5.5 ms since that statement was sent: due again
    assert directory.get(CARD) == first
    assert counting.statements[read:] == ["version"]
    elsewhere(database, f"UPDATE cards SET status = 'lost' WHERE card_no = '{CARD}'")
    directory.saw_count(version + 1, clock.now)  # moved: forgotten at once
    again = directory.get(CARD)
    assert again is not None and again.status == "lost"
    directory.saw_count(version, clock.now - 1)  # an older read arriving late: forgets again
    read = len(counting.statements)
    assert directory.get(CARD) == again
    assert counting.statements[read:] == ["?"]  # the card read afresh, the count still trusted
    directory.close()

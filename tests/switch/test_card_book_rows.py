"""The centre's copy as issuance reads and writes it (ledger.medical.card_book_rows), on SQLite
and PostgreSQL behind a real daemon: the visits the daemon kept for a person's card come back
oldest first, across the person's cards, sealed (they open to what the centre wrote); health
data are kept and replaced; ``pending`` is cleared only for the row the card was written from."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from ledger.medical import card_book_rows as rows
from ledger.medical.card_copies import HealthCopy, VisitCopies
from messages.card_records import DONOR_NO, HealthData, Visit, read_health_command
from simulators import pos_records, terminal_card
from switch.card_io.connection import expect
from switch.card_io.record_book import check_health
from switch.key_home import personal_keys
from tests.support.card_book import centre_personal_keys, issue_book_cards
from tests.support.daemon import Daemon, run, running_daemon
from tests.support.estate_cli import database_of
from tests.support.kiosk import PIN
from tests.support.on_file import CardOnFile
from tests.support.operators import on_engine

OLD_SERIAL = "31010000009999"


def test_the_tests_issuance_writes_initial_health_data(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        health = HealthData("B+", ("PCN",), (), "", DONOR_NO, ("I10",), "centre", "20261207090000")
        (conn,), keys = await issue_book_cards(daemon, [daemon.first_card()], health=health)
        serial = bytes.fromhex(daemon.first_card().serial).rjust(10, b"\0")
        terminal_card.open_application(conn, PIN)
        assert pos_records.health(conn) == health
        whole = expect(conn, read_health_command(), "READ 0019")
        assert await check_health(daemon.hsm, keys, serial, whole)  # the centre's code

    run(tmp_path, scenario)


def test_a_persons_copies_on_any_engine(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        await centre_personal_keys(daemon)
        card = daemon.first_card()
        other = CardOnFile(*daemon.sql(
            "SELECT card_no, application_serial, cardholder_id FROM cards WHERE cardholder_id"
            " <> ? ORDER BY card_no LIMIT 1", (card.cardholder_id,)
        )[0])  # fmt: skip
        daemon.sql(
            "INSERT INTO cards (card_no, application_serial, cardholder_id, key_version, status,"
            " expiry) SELECT ?, ?, cardholder_id, key_version, 'replaced', expiry FROM cards"
            " WHERE card_no = ?",
            ("6210989999999999", OLD_SERIAL, card.card_no),
        )  # an earlier card of the same person
        copies = VisitCopies(
            daemon.app.medical_store, partial(personal_keys, daemon.hsm, daemon.store)
        )
        kept = [  # (serial, bill, written at): the person's cards' and another person's
            (OLD_SERIAL, "00000000000000A1", 1_000),
            (OLD_SERIAL, "00000000000000A2", 2_000),
            (other.serial, "00000000000000B1", 2_500),
            (card.serial, "00000000000000A3", 3_000),
        ]
        for serial, bill, at in kept:
            record = Visit("20261207", "h1", "IM", ("J45.9",), bill, 100, 0, 100, 0).encode()
            await copies.keep(serial, bill, record, at)
        db = database_of(daemon)

        def read(engine: Any) -> Any:
            return (
                rows.person_visits(engine, card.cardholder_id),
                rows.person_visits(engine, card.cardholder_id, limit=2),
                rows.person_visits(engine, "nobody"),
            )

        every, newest, none = await asyncio.to_thread(on_engine, db, read)
        mine = [bill for serial, bill, _ in kept if serial != other.serial]
        assert [v.bill_id for v in every] == mine  # oldest first, across the person's cards
        assert [v.bill_id for v in newest] == mine[1:]  # the newest two, oldest first
        assert none == []
        for copy in every:  # sealed: they open to what was kept, for their own card
            opened = await copies.find(copy.application_serial, copy.bill_id)
            assert opened is not None and Visit.decode(opened).bill_id == copy.bill_id
            assert b"J459" not in copy.sealed

        first = HealthCopy(card.cardholder_id, b"sealed-1", 1, "centre", 100, True)
        second = first._replace(sealed=b"sealed-2", updated_by="h1", updated_at_us=200)

        def health(engine: Any) -> Any:
            rows.keep_health(engine, first)
            kept = rows.person_health(engine, card.cardholder_id)
            rows.keep_health(engine, second)  # replaced: a newer update
            stale = rows.health_written(engine, card.cardholder_id, 100)  # the card got the first
            fresh = rows.health_written(engine, card.cardholder_id, 200)
            return kept, stale, fresh, rows.person_health(engine, card.cardholder_id)

        kept, stale, fresh, after = await asyncio.to_thread(on_engine, db, health)
        assert kept == first and (stale, fresh) == (False, True)
        assert after == second._replace(pending=False)
        assert await asyncio.to_thread(on_engine, db, lambda e: rows.person_health(e, "x")) is None

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=3, backend=backend) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))

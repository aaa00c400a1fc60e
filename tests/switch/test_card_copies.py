"""The centre's own copy of the card's record book (issue 24 item 4, specs/card-layout.md "The
centre's copy"), through the real daemon on SQLite and PostgreSQL: every visit the centre writes
to a card is kept in ``card_visits`` sealed under PERSONAL_DATA — the copy opens to exactly the
record the card holds; a card whose newest visit is the centre's copy raises nothing; a card
whose record carries other diagnoses for a genuine bill (date, place and amounts right) goes to
review; and on SQLite no diagnosis code appears in clear anywhere in the database's files."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import uvloop

from hsm.keys import KeyUsage
from ledger.medical.card_copies import VisitCopies
from routing.cardkeys import card_master_alias
from simulators import pos_records, terminal_card
from simulators.pos import Pos
from switch.key_home import personal_keys
from tests.support.card_book import issue_book_cards, settle_first_card, terminal_log_fields
from tests.support.daemon import Daemon, now, run, running_daemon
from tests.support.kiosk import PIN, issue_psam
from tests.support.on_file import CardOnFile
from tests.support.scripted_day import terminal_link
from tests.support.settlement import his_submit, medical_reference

DIAGNOSES = ("E11.9", "K29.7")  # as the POS sends them; the card stores E119, K297
CLEAR_FORMS = (b"E11.9", b"E119", b"K29.7", b"K297")
DRUG = [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]


def database_bytes(home: Path) -> bytes:
    """The SQLite database's files as they are on disk: the main file and its WAL."""
    files = [home / "medswitch.db", home / "medswitch.db-wal"]
    return b"".join(path.read_bytes() for path in files if path.exists())


def test_the_centre_keeps_a_sealed_copy_and_checks_cards_against_it(
    tmp_path: Path, backend: str
) -> None:
    async def scenario(daemon: Daemon) -> None:
        psam = daemon.first_psam()
        card = CardOnFile(*daemon.sql(
            "SELECT card_no, application_serial, cardholder_id FROM cards ORDER BY card_no LIMIT 1"
        )[0])  # fmt: skip
        token = await asyncio.to_thread(medical_reference, daemon, psam.institution_id)
        conns, keys = await issue_book_cards(daemon, [card])
        psam_card = await issue_psam(daemon, psam, keys.purchase)
        link = await terminal_link(
            daemon, psam.terminal_id, psam.institution_id, tmp_path / "pos.json",
            daemon.app.terminal_port, 5.0,
        )  # fmt: skip
        pos = Pos(link, conns[0], psam_card, pan=card.card_no, pin=PIN)

        def submit(number: str) -> dict[str, Any]:
            body = {"his_bill_no": number, "card_no": card.card_no,
                    "service_date": now().date().isoformat(), "lines": DRUG}  # fmt: skip
            return his_submit(daemon.app.http_port, psam.institution_id, token, body)

        async def settle(number: str, visit: tuple[str, tuple[str, ...]]) -> str:
            bill = await asyncio.to_thread(submit, number)
            lines = await pos.settle(
                bill["bill_id"], bill["split"]["total_fen"], personal="cash", visit=visit
            )
            assert "  visit recorded on the card" in lines, lines
            return str(bill["bill_id"])

        def mismatches() -> list[tuple[str, str]]:
            rows = daemon.sql(
                "SELECT reference, detail FROM review_items WHERE reason = 'card_visit_mismatch'"
            )
            return [(str(row[0]), str(row[1])) for row in rows]

        try:
            await pos.sign_on()
            first = await settle("COPY-1", ("END", DIAGNOSES))

            # The copy: one row for the bill, sealed; it opens to what the card holds.
            rows = daemon.sql("SELECT bill_id, application_serial, sealed FROM card_visits")
            assert [(row[0], row[1]) for row in rows] == [(first, card.serial)]
            assert not any(form in bytes(rows[0][2]) for form in CLEAR_FORMS)
            copies = VisitCopies(
                daemon.app.medical_store, partial(personal_keys, daemon.hsm, daemon.store)
            )
            terminal_card.open_application(conns[0], PIN)
            on_card = pos_records.recent_visits(conns[0])[0]
            assert on_card.diagnoses == DIAGNOSES and on_card.department == "END"
            assert await copies.find(card.serial, first) == on_card.encode()
            assert await copies.find("00" * 10, first) is None  # another card's serial

            # The card's newest visit is the centre's copy: nothing to review.
            second = await settle("COPY-2", ("IM", ("J45.9",)))
            assert mismatches() == []

            # The newest record altered on the chip — other diagnoses and department, the
            # bill's date, place and amounts left right — is caught against the copy.
            state = conns[0]._card.state  # type: ignore[attr-defined]
            held = pos_records.recent_visits(conns[0])[0]
            assert held.bill_id == second
            state.visits[0] = replace(held, department="PSY", diagnoses=("F32.9",)).encode()
            await settle("COPY-3", ("IM", ()))
            reference = f"card|{card.serial}|bill|{second}"
            assert mismatches() == [
                (reference, "the card's visit record differs from the centre's copy "
                 "(department or diagnoses)")
            ]  # fmt: skip

            # A visit of a genuine bill that the centre never wrote to a card (no copy kept).
            third = await settle("COPY-4", ("IM", ()))
            daemon.sql("DELETE FROM card_visits WHERE bill_id = ?", (third,))
            await settle("COPY-5", ("IM", ()))
            assert (
                f"card|{card.serial}|bill|{third}",
                "the centre keeps no copy of the card's visit",
            ) in mismatches()
        finally:
            await pos.link.close()

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=3, backend=backend) as daemon:
            await scenario(daemon)
            if backend == "sqlite":  # what the running daemon has written: file and WAL
                written = database_bytes(tmp_path)
                assert (
                    b"A01" in written
                )  # the bill's own line is there in clear: the bytes are read
                assert not [form for form in CLEAR_FORMS if form in written]
        if backend == "sqlite":  # and after its last checkpoint
            written = database_bytes(tmp_path)
            assert not [form for form in CLEAR_FORMS if form in written]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


def test_without_the_personal_data_key_no_visit_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A centre with its record key but no PERSONAL_DATA key cannot keep a copy: the approved
    settlement carries no visit script (the card gets nothing the centre could not show again),
    its log line says why, and nothing is kept."""
    caplog.set_level(logging.INFO, logger="medswitch.terminal")

    async def scenario(daemon: Daemon) -> None:
        alias = card_master_alias(KeyUsage.MK_RECORD)
        await daemon.hsm.generate_key(alias, KeyUsage.MK_RECORD, now=now())
        settled = await settle_first_card(daemon, "NO-COPY", DRUG, "E11.9")
        assert settled.split.visit_script is None
        assert daemon.sql("SELECT COUNT(*) FROM card_visits") == [(0,)]
        reasons = [fields.get("reason") for fields in terminal_log_fields(caplog.records)]
        assert "visit_copy_unavailable: KeyNotFound" in reasons, reasons

    run(tmp_path, scenario)

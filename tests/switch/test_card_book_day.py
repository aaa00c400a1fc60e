"""A small scripted day of the card's record book (issue 24) against a real daemon over real
sockets: one cardholder visits two hospitals; each settlement (HIS bill → 0200 with the card's
challenge → 0210 with the centre's visit script → the POS hands it to the card) leaves a visit
record on the card, which a third hospital's POS reads back after the cardholder's PIN. A
forged script is refused by the card; a card holding a visit the centre did not write goes to
review at its next settlement; a card without the record key refuses the centre's script and
the settlement stands."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import uvloop

from messages.card_records import Visit, append_visit_command
from simulators import pos_records, terminal_card
from simulators.pos import Pos
from switch.card_io.connection import ApduError, CardConnection
from tests.support.card_book import (
    issue_book_cards,
    psams_of_three_institutions,
    settle_first_card,
    terminal_log_fields,
)
from tests.support.daemon import Daemon, now, run, running_daemon
from tests.support.kiosk import PIN, issue_psam
from tests.support.scripted_day import cards_on_file, present, terminal_link
from tests.support.settlement import his_submit, his_tokens

CARDS = 3


def review_reasons(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT reason, reference FROM review_items").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def test_visits_at_two_hospitals_are_read_back_at_a_third(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        cards = cards_on_file(db, CARDS)
        rows = psams_of_three_institutions(db)
        institutions = [row.institution_id for row in rows]
        tokens = await his_tokens(daemon, institutions)
        conns, keys = await issue_book_cards(daemon, cards[:2])
        bare, _ = await issue_book_cards(daemon, cards[2:], record_key=False)
        psams = [await issue_psam(daemon, row, keys.purchase) for row in rows]

        def submit(at: int, card: int, number: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
            body = {
                "his_bill_no": number,
                "card_no": cards[card].card_no,
                "service_date": now().date().isoformat(),
                "lines": lines,
            }
            return his_submit(
                daemon.app.http_port, institutions[at], tokens[institutions[at]], body
            )

        drug = [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]
        scan = [{"code": "B02", "quantity": 1, "unit_price_fen": 15000}]
        first = await asyncio.to_thread(submit, 0, 0, "BOOK-1", drug)
        second = await asyncio.to_thread(submit, 1, 0, "BOOK-2", scan)
        poses = []
        for n, row in enumerate(rows):
            link = await terminal_link(
                daemon,
                row.terminal_id,
                row.institution_id,
                tmp_path / f"pos{n}.json",
                daemon.app.terminal_port,
                5.0,
            )
            poses.append(Pos(link, conns[0], psams[n], pan=cards[0].card_no, pin=PIN))
        try:
            for pos in poses:
                await pos.sign_on()
            # Two hospitals, one visit each: the centre's script is applied at once.
            lines = await poses[0].settle(
                first["bill_id"],
                first["split"]["total_fen"],
                personal="cash",
                visit=("IM", ("J45.9",)),
            )
            assert "  visit recorded on the card" in lines, lines
            lines = await poses[1].settle(
                second["bill_id"],
                second["split"]["total_fen"],
                personal="cash",
                visit=("RAD", ("S52.5", "W19")),
            )
            assert "  visit recorded on the card" in lines, lines

            # The third hospital reads them back: the emergency block freely, visits after PIN.
            card = poses[2].card
            terminal_card.open_application(card, PIN)
            visits = pos_records.recent_visits(card)
            assert [v.institution_id for v in visits] == [institutions[1], institutions[0]]
            assert visits[0].diagnoses == ("S52.5", "W19") and visits[0].department == "RAD"
            assert visits[1].bill_id == first["bill_id"]
            assert visits[1].total_fen == first["split"]["total_fen"]
            assert visits[1].pooled_fen == first["split"]["pooled_fen"]
            shown = pos_records.visit_lines(visits)
            assert shown[0].startswith(f"{now():%Y%m%d} {institutions[1]} RAD S52.5,W19"), shown
            with pytest.raises(ApduError):  # a wrong PIN: nothing to read
                terminal_card.open_application(card, "000000")
            _, sw = card.transmit(bytes.fromhex("00B201D448"))
            assert sw == 0x6982

            # A forged record (a terminal's own MAC) is refused and nothing is written.
            await forged_write_refused(conns[0], visits[0])

            # A card carrying a visit the centre never wrote (here: the second card given the
            # first card's genuine record by a tampered terminal is impossible, so the test
            # writes the record into the chip directly, as a cloned chip would hold it).
            third = await asyncio.to_thread(submit, 0, 1, "BOOK-3", drug)
            fake = Visit(f"{now():%Y%m%d}", institutions[0], "IM", (), "00" * 8, 1, 0, 0, 1)
            conns[1]._card.state.visits.insert(0, fake.encode())  # type: ignore[attr-defined]
            present(poses[0], conns[1], cards[1])
            lines = await poses[0].settle(
                third["bill_id"], third["split"]["total_fen"], personal="cash"
            )
            assert "  visit recorded on the card" in lines, lines
            found = review_reasons(db)
            assert ("card_visit_mismatch", f"card|{cards[1].serial}|bill|{'00' * 8}") in found

            # A card without the record key: the centre's script is refused, the bill settles.
            fourth = await asyncio.to_thread(submit, 1, 2, "BOOK-4", drug)
            present(poses[1], bare[0], cards[2])
            lines = await poses[1].settle(
                fourth["bill_id"], fourth["split"]["total_fen"], personal="cash"
            )
            assert "  the card refused the visit record (6A88)" in lines, lines
            assert "  bill closed in cash at the centre 00" in lines, lines
        finally:
            for pos in poses:
                await pos.link.close()

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=CARDS) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


async def forged_write_refused(card: CardConnection, visit: Visit) -> None:
    """A terminal that makes its own APPEND RECORD (any MAC it can compute) is refused 6988."""
    terminal_card.open_application(card, PIN)
    before = pos_records.recent_visits(card)
    challenge, sw = card.transmit(bytes.fromhex("0084000004"))
    assert sw == 0x9000 and len(challenge) == 4
    command = append_visit_command(visit)
    _, sw = card.transmit(command + bytes.fromhex("DEADBEEF"))
    assert sw == 0x6988
    assert pos_records.recent_visits(card) == before


def test_without_mk_record_the_settlement_stands_and_its_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A centre with no card/MK_RECORD (keys not yet generated) approves the settlement with
    no visit script; the approval's log line names the reason, with no card data."""
    caplog.set_level(logging.INFO, logger="medswitch.terminal")

    async def scenario(daemon: Daemon) -> None:
        drug = [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]
        settled = await settle_first_card(daemon, "NO-KEY", drug, "J45.9")
        assert settled.split.visit_script is None
        assert settled.split.total_fen == settled.total_fen
        logged = terminal_log_fields(caplog.records)
        approved = [f for f in logged if f.get("rc") == "00" and f.get("reason")]
        assert [f["reason"] for f in approved] == ["visit_script_unavailable: KeyNotFoundError"]
        assert settled.card_no not in str(approved)

    run(tmp_path, scenario)

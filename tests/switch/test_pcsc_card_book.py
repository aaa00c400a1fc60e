"""The card's record book (issue 24) over the real PC/SC path: pcscd with Debian's vsmartcard
vpcd driver, the virtual card in "Virtual PCD 00 00" through the vpcd client, pyscard reaching
it as a real card (the fixtures and their skip rules: tests/support/pcsc.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from messages.card_records import Visit, append_visit_command
from messages.card_signatures import PublishedKey
from simulators import pos_records, terminal_card
from simulators.pos import Pos
from simulators.vpcd import VPCD_PORT
from switch.card_io.connection import expect
from tests.support.card_book import (
    blank_book_card,
    book_keys,
    centre_personal_keys,
    his_call,
    personalise_book_card,
    psams_of_three_institutions,
)
from tests.support.daemon import Daemon, now
from tests.support.daemon import run as run_daemon
from tests.support.kiosk import PIN, issue_psam
from tests.support.on_file import first_card
from tests.support.pcsc import CARD_READER, inserted, reconnect
from tests.support.scripted_day import terminal_link
from tests.support.settlement import his_submit, medical_reference


def test_record_book_over_pcsc(pcscd: None, tmp_path: Path) -> None:
    """Issue 24 over the real PC/SC path (pcscd + vpcd + pyscard): a card personalised with its
    record key through the daemon's HSM; the hospital sends health data through the HIS; a
    settlement at its POS leaves the visit on the card (the centre's script) and brings the
    health data (the script in the 0230 to the settlement's 0220); a forged write is refused
    6988; a second hospital's reader shows the emergency block without the PIN, the visit and
    the health data after it, both signatures checked with the centre's published key."""

    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        on_file, rows = first_card(db), psams_of_three_institutions(db)
        at = rows[0].institution_id
        token = await asyncio.to_thread(medical_reference, daemon, at)
        body = {
            "his_bill_no": "PCSC-1",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}],
        }
        bill = await asyncio.to_thread(his_submit, daemon.app.http_port, at, token, body)
        await centre_personal_keys(daemon)
        health = {"blood_type": "A+", "allergies": ["PCN"], "chronic_conditions": ["I10"]}
        status, _ = await asyncio.to_thread(his_call, daemon.app.http_port, at, token, "PUT",
                                            f"/cards/{on_file.card_no}/health", health)  # fmt: skip
        assert status == 202
        bundle = await book_keys(daemon)
        card = blank_book_card(bundle, on_file)
        client, conn = inserted(card, VPCD_PORT, CARD_READER)
        try:
            await personalise_book_card(daemon, conn, bundle, on_file)
            psam = await issue_psam(daemon, rows[0], bundle.keys.purchase)
            link = await terminal_link(
                daemon,
                rows[0].terminal_id,
                at,
                tmp_path / "pos.json",
                daemon.app.terminal_port,
                5.0,
            )
            pos = Pos(link, conn, psam, pan=on_file.card_no, pin=PIN)
            try:
                await pos.sign_on()
                lines = await pos.settle(
                    bill["bill_id"],
                    bill["split"]["total_fen"],
                    personal="cash",
                    visit=("IM", ("J45.9",)),
                )
            finally:
                await link.close()
            assert "  visit recorded on the card" in lines, lines
            assert "  health data updated on the card" in lines, lines
            terminal_card.open_application(conn, PIN)
            assert len(expect(conn, bytes.fromhex("0084000004"), "GET CHALLENGE")) == 4
            forged = append_visit_command(
                Visit(f"{now():%Y%m%d}", at, "IM", (), "00" * 8, 1, 0, 0, 1)
            ) + bytes(4)
            assert conn.transmit(forged)[1] == 0x6988
            conn.disconnect()
            conn = reconnect(client, card, CARD_READER)  # the next hospital's reader
            shown = await pos_records.emergency_lines(conn)  # no PIN
            assert shown[0].startswith("emergency block: blood A+, allergies PCN,"), shown
            terminal_card.open_application(conn, PIN)
            kept = pos_records.health(conn)
            assert kept is not None and (kept.chronic, kept.updated_by) == (("I10",), at)
            visits = pos_records.recent_visits(conn)
            assert [(v.institution_id, v.bill_id, v.diagnoses) for v in visits] == [
                (at, bill["bill_id"], ("J45.9",))
            ]
            # The signatures came through PC/SC too (personalisation's holder script, the
            # 0230's chained health script): this reader checks them with the published key.
            assert bundle.keys.signing is not None
            published = PublishedKey(1, await daemon.hsm.public_key(bundle.keys.signing))
            shown = await pos_records.book(conn, PIN, [published])
            assert shown[-2:] == ["holder data signed by the centre (key v1)",
                                  "health data signed by the centre (key v1)"], shown  # fmt: skip
        finally:
            conn.disconnect()
            client.stop()

    run_daemon(tmp_path, scenario)

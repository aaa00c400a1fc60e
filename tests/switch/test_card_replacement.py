"""A replacement card written from the centre's copy (issue 24 item 3, specs/card-layout.md
"Issuance and replacement"), on a demo deployment through `medswitch cards replace | issue |
approve | personalize` and the real daemon: a card with health data given at issuance settles
three visits at a hospital's POS and gets a health update through the HIS API; it is replaced,
and the new card — personalised by command — reads back, after VERIFY, the same three visits
(newest first) and the updated health data, each written under the new card's own record key;
its health data are no longer pending; it takes the next visit script, and its newest visit (a
bill of the card it replaced) raises no review; the HIS's book shows what the card holds."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import uvloop

from ledger.demo import init_demo
from messages.card_records import DONOR_YES, Visit
from simulators import pos_records, terminal_card
from simulators.card import VirtualCard
from simulators.card.factory import blank_card
from simulators.pos import Pos
from switch.card_io.connection import CardConnection, DirectConnection
from switch.demo.keys import custodian_files, provision
from switch.key_home import Home, component_files_of, open_soft_hsm, personal_keys, resolve
from switch.keystore_file import FileKeyStore
from tests.support.card_book import his_call, next_second
from tests.support.ceremony import Ceremony, serving
from tests.support.daemon import Daemon, now
from tests.support.his_health import put_health
from tests.support.kiosk import PIN, issue_psam
from tests.support.on_file import first_card, first_psam
from tests.support.scripted_day import terminal_link
from tests.support.settlement import his_submit, medical_reference

DRUG = [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]
VISITS = (("IM", ("J45.9",)), ("END", ("E11.9", "I10")), ("CAR", ("I10",)))
UPDATE = {"blood_type": "O+", "organ_donor": "donor", "allergies": ["PCN", "SUL"],
          "chronic_conditions": ["E11.9", "I10"]}  # fmt: skip


def deployment(tmp_path: Path) -> Ceremony:
    """A demo key home (TEST ONLY keys, MK_RECORD and PERSONAL_DATA among them) and a demo
    ledger whose cardholders are sealed under its keys."""
    home, media = tmp_path / "home", tmp_path / "media"
    media.mkdir()
    asyncio.run(provision(home, []))
    c = Ceremony(home, media, custodian_files(home))
    hsm = open_soft_hsm(home, component_files_of(c.lmk_files))
    sealing = asyncio.run(personal_keys(hsm, FileKeyStore(home / "keys.jsonl")))
    init_demo(home / "medswitch.db", 3, personal=sealing)
    c.cards("factory-keys")
    return c


def new_card(c: Ceremony, old_card_no: str, reason: str, *args: str) -> tuple[str, VirtualCard]:
    """`cards replace OLD`, `issue`, `approve` (another operator), `personalize` into a blank
    virtual card in a reader: the new card's number and the card."""
    c.cards("replace", old_card_no, "--reason", reason)
    out = c.media / f"batches-{old_card_no}"
    assert "1 cards" in c.cards("issue", "--out", str(out), *args).output
    (batch,) = out.glob("*.bat")
    c.cards("approve", str(batch), who="bob")
    with sqlite3.connect(c.home / "medswitch.db") as db:
        card_no, serial = db.execute(
            "SELECT card_no, application_serial FROM cards WHERE status = 'issued'"
        ).fetchone()
    card = VirtualCard(blank_card(bytes.fromhex(serial).rjust(10, b"\0")))
    done = c.cards("personalize", str(batch), "--reader", "r", who="carol", readers={"r": card})
    assert "1 personalised, 0 failed" in done.output, done.output
    return card_no, card


def connected(card: VirtualCard) -> CardConnection:
    conn = DirectConnection(card)
    conn.connect()
    return conn


def book_of(card: VirtualCard) -> tuple[Any, list[Visit]]:
    conn = connected(card)
    terminal_card.open_application(conn, PIN)
    return pos_records.health(conn), pos_records.recent_visits(conn)


def test_a_replacement_card_is_written_from_the_centres_copy(tmp_path: Path) -> None:
    c = deployment(tmp_path)
    db = c.home / "medswitch.db"
    holder = first_card(db)
    given = c.media / "health.jsonl"
    given.write_text(json.dumps({"cardholder_id": holder.cardholder_id, "blood_type": "A+"}))
    first_no, first = new_card(c, holder.card_no, "damaged", "--health", str(given))
    assert book_of(first)[0].blood_type == "A+"

    async def day(daemon: Daemon) -> None:
        psam_row = first_psam(db)
        institution = psam_row.institution_id
        token = await asyncio.to_thread(medical_reference, daemon, institution)
        purchase = await resolve(Home(c.home, "test"), "card/MK_PURCHASE")
        psam = await issue_psam(daemon, psam_row, purchase)
        state, port = tmp_path / "pos.json", daemon.app.terminal_port
        link = await terminal_link(daemon, psam_row.terminal_id, institution, state, port, 5.0)
        pos = Pos(link, connected(first), psam, pan=first_no, pin=PIN)

        async def settle(card_no: str, number: str, visit: tuple[str, tuple[str, ...]]) -> None:
            body = {"his_bill_no": number, "card_no": card_no,
                    "service_date": now().date().isoformat(), "lines": DRUG}  # fmt: skip
            port = daemon.app.http_port
            bill = await asyncio.to_thread(his_submit, port, institution, token, body)
            lines = await pos.settle(
                bill["bill_id"], bill["split"]["total_fen"], personal="cash", visit=visit
            )
            assert "  visit recorded on the card" in lines, lines

        try:
            await pos.sign_on()
            for number, visit in enumerate(VISITS, start=1):
                await next_second()  # the copies' order is the time they were kept (to the
                await settle(first_no, f"REPL-{number}", visit)  # daemon's clock's second)
            status, answer = await asyncio.to_thread(
                put_health, daemon.app.http_port, institution, token, first_no, UPDATE
            )
            assert status == 202, answer
            health, visits = book_of(first)
            assert health.blood_type == "A+" and len(visits) == 3  # the update: still pending

            # Replaced: the new card is written from the centre's copy.
            second_no, second = await asyncio.to_thread(new_card, c, first_no, "lost")
            health, visits = book_of(second)
            assert visits == book_of(first)[1]  # the same three, newest first
            assert [(v.department, v.diagnoses) for v in visits] == list(VISITS[::-1])
            assert (health.blood_type, health.allergies, health.chronic, health.donor) == (
                "O+", ("PCN", "SUL"), ("E11.9", "I10"), DONOR_YES
            )  # fmt: skip
            assert health.updated_by == institution
            pending = daemon.sql("SELECT pending FROM card_health")
            assert [bool(row[0]) for row in pending] == [False]

            # It takes the next visit script; its visit file (the old card's three bills, the
            # newest among them, each checked against the old card's copy) is no mismatch.
            pos.card, pos.pan = connected(second), second_no
            await next_second()
            await settle(second_no, "REPL-4", ("DER", ("L20.9",)))
            health, visits = book_of(second)
            assert len(visits) == 4 and visits[0].diagnoses == ("L20.9",)
            mismatches = daemon.sql(
                "SELECT reference, detail FROM review_items WHERE reason = 'card_visit_mismatch'"
            )
            assert mismatches == []
            # The hospital's HIS, within the consent of that settlement, reads the book the
            # card holds: the four visits, the three of the card it replaced among them.
            port, path = daemon.app.http_port, f"/cards/{second_no}/book"
            status, book = await asyncio.to_thread(his_call, port, institution, token, "GET", path)
            assert status == 200, book
            shown = [(v["department"], tuple(v["diagnoses"])) for v in book["visits"]]
            assert shown == [(v.department, v.diagnoses) for v in visits], shown
        finally:
            await pos.link.close()

    async def main() -> None:
        async with serving(c) as daemon:
            await day(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))

"""Issue 24's scripted day (items 3 and 4) against a real daemon over real sockets: a hospital's
health data update (HIS PUT) reaches the card at its next use — the POS sends the card's health
file with the settlement, the 0230 to the settlement's 0220 carries the centre's script, the
POS applies it — and is no longer pending at the following contact; a pharmacy's update is
refused and reviewed; visits at two hospitals are read back at a third (its POS after the PIN,
the emergency block without it; its HIS only within the cardholder's consent window); scripts a
tampered reader alters are refused by the card (6988), reported by the POS and reviewed; a card
whose health file the centre did not write goes to review, and so does one with an older visit
record altered on the chip (the POS reports the whole visit file)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import uvloop

from messages.card_records import HealthData, Visit
from messages.card_signatures import PublishedKey, health_message, verify
from routing.visit_records import FILE_DIFFERS
from simulators import pos_records
from simulators.pos import Pos
from tests.support.card_book import (
    TamperedReader,
    his_call,
    issue_book_cards,
    next_second,
    psams_of_three_institutions,
)
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.kiosk import PIN, issue_psam
from tests.support.on_file import CardOnFile
from tests.support.scripted_day import cards_on_file, terminal_link
from tests.support.settlement import his_tokens, medical_reference

HEALTH = {
    "blood_type": "O+",
    "organ_donor": "donor",
    "emergency_phone": "13800138000",
    "allergies": ["PCN"],
    "implants": ["PM"],
    "chronic_conditions": ["E11.9"],
}
UPDATED = "  health data updated on the card"
DRUG = [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]
INS_APPEND, INS_UPDATE = 0xE2, 0xD6


def rows_of(database: Path, statement: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return [tuple(row) for row in connection.execute(statement).fetchall()]


def test_health_update_reaches_the_card_and_the_book_is_read_with_consent(
    tmp_path: Path,
) -> None:
    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        card = cards_on_file(db, 1)[0]
        rows = psams_of_three_institutions(db)
        hospitals = [row.institution_id for row in rows]
        pharmacy = rows_of(db, "SELECT id FROM institutions WHERE kind = 'pharmacy'")[0][0]
        tokens = await his_tokens(daemon, [*hospitals, pharmacy])
        conns, keys = await issue_book_cards(daemon, [card])
        psams = [await issue_psam(daemon, row, keys.purchase) for row in rows]
        port = daemon.app.http_port

        def his(at: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return his_call(port, at, tokens[at], method, path, body)

        async def bill(at: int, number: str) -> dict[str, Any]:
            body = {"his_bill_no": number, "card_no": card.card_no,
                    "service_date": now().date().isoformat(), "lines": DRUG}  # fmt: skip
            status, answer = await asyncio.to_thread(his, hospitals[at], "POST", "/bills", body)
            assert status == 201, answer
            return dict(answer)

        poses = []
        for n, row in enumerate(rows):
            state = tmp_path / f"pos{n}.json"
            terminal_port = daemon.app.terminal_port
            link = await terminal_link(
                daemon, row.terminal_id, row.institution_id, state, terminal_port, 5.0
            )
            poses.append(Pos(link, conns[0], psams[n], pan=card.card_no, pin=PIN))

        async def settle(at: int, number: str, visit: tuple[str, tuple[str, ...]]) -> list[str]:
            submitted = await bill(at, number)
            total = submitted["split"]["total_fen"]
            return await poses[at].settle(submitted["bill_id"], total, personal="cash", visit=visit)

        def reviews(reason: str) -> list[str]:
            query = f"SELECT reference FROM review_items WHERE reason = '{reason}' ORDER BY 1"
            return [str(r[0]) for r in rows_of(db, query)]

        def pending() -> list[bool]:
            return [bool(r[0]) for r in rows_of(db, "SELECT pending FROM card_health")]

        book = f"/cards/{card.card_no}/book"
        try:
            for pos in poses:
                await pos.sign_on()
            # An authorised hospital's update is kept pending; a pharmacy's is refused.
            health_path = f"/cards/{card.card_no}/health"
            status, answer = await asyncio.to_thread(his, hospitals[0], "PUT", health_path, HEALTH)
            assert status == 202, answer
            other = {"blood_type": "A-"}
            status, answer = await asyncio.to_thread(his, pharmacy, "PUT", health_path, other)
            assert (status, answer["error"]["code"]) == (403, "not_authorised")
            assert reviews("health_update_refused") == [
                f"institution|{pharmacy}|card|{card.serial}"
            ]
            assert pending() == [True]
            # No consent yet: the HIS may not read the book.
            status, answer = await asyncio.to_thread(his, hospitals[1], "GET", book)
            assert (status, answer["error"]["code"]) == (403, "consent_required"), answer

            # The card's next use (hospital 1): the visit, then the health data in the 0230.
            lines = await settle(0, "DAY-1", ("IM", ("J45.9",)))
            assert "  visit recorded on the card" in lines and UPDATED in lines, lines
            assert pending() == [True]  # written, not yet seen on the card
            # The following contact (hospital 2): the card holds them; nothing more is sent.
            await next_second()  # the book's order is the time the copies were kept (seconds)
            lines = await settle(1, "DAY-2", ("RAD", ("S52.5", "W19")))
            assert "  visit recorded on the card" in lines and UPDATED not in lines, lines
            assert pending() == [False]

            # The third hospital's POS: the emergency block without the PIN, the book after it.
            shown = await pos_records.emergency_lines(conns[0])
            assert shown == ["emergency block: blood O+, allergies PCN, implants PM, donor yes,"
                             " emergency contact 13800138000"], shown  # fmt: skip
            assert keys.signing is not None
            published = PublishedKey(1, await daemon.hsm.public_key(keys.signing))
            shown = await pos_records.book(conns[0], PIN, [published])
            assert "chronic E11.9" in shown[0] and f"by {hospitals[0]}" in shown[0], shown
            assert shown[1] == "visits on the card: 2", shown
            assert [s.split()[1:3] for s in shown[2:4]] == [[hospitals[1], "RAD"],
                                                           [hospitals[0], "IM"]]  # fmt: skip
            # The update came with the centre's signature (the 0230's chained script): the
            # POS checks it offline with the centre's published key.
            assert shown[4:] == ["holder data signed by the centre (key v1)",
                                 "health data signed by the centre (key v1)"], shown  # fmt: skip
            # Hospital 2's HIS within its consent window: the centre's copy, decoded; the
            # third's (no settlement there yet) may not.
            status, answer = await asyncio.to_thread(his, hospitals[1], "GET", book)
            assert status == 200, answer
            assert answer["health"]["chronic_conditions"] == ["E11.9"]
            assert answer["health"]["pending"] is False
            # ... with the centre's signature over them, the one on the card: the HIS checks
            # it offline with the published key, and the signed bytes are the card's file.
            signed = answer["health"]["signed"]
            message = bytes.fromhex(signed["message"])
            signature = bytes.fromhex(signed["signature"])
            assert signed["key_version"] == 1 and verify(published.pem, message, signature)
            serial = bytes.fromhex(card.serial.rjust(20, "0"))
            chip = conns[0]._card.state  # type: ignore[attr-defined]
            assert message == health_message(serial, chip.binary[0x19][:92], version=1)
            assert signature == b"".join(chip.signatures[2:4])
            assert [(v["institution_id"], v["diagnoses"]) for v in answer["visits"]] == [
                (hospitals[1], ["S52.5", "W19"]), (hospitals[0], ["J45.9"])]  # fmt: skip
            assert card.card_no not in str(answer)
            status, answer = await asyncio.to_thread(his, hospitals[2], "GET", book)
            assert (status, answer["error"]["code"]) == (403, "consent_required"), answer

            # A tampered reader at hospital 3 alters the visit script and the health script
            # of a new update: the card refuses both (6988), the POS reports them, the centre
            # reviews; the data stay pending and reach the card at its next clean contact.
            newer = {**HEALTH, "allergies": ["PCN", "SUL"]}
            status, _ = await asyncio.to_thread(his, hospitals[1], "PUT", health_path, newer)
            assert status == 202
            reader = TamperedReader(conns[0], {INS_APPEND, INS_UPDATE})
            poses[2].card = reader
            lines = await settle(2, "DAY-3", ("ENT", ()))
            assert "  the card refused the visit record (6988)" in lines, lines
            assert "  the card refused the health data update (6988)" in lines, lines
            assert reader.altered == 2
            day = f"{now():%Y%m%d}"
            assert reviews("card_script_refused") == [f"card|{card.serial}|visit|{day}"]
            assert pending() == [True]
            poses[2].card = conns[0]  # a sound reader; the health refusal goes with the 0200
            lines = await settle(2, "DAY-4", ("ENT", ()))
            assert "  visit recorded on the card" in lines and UPDATED in lines, lines
            assert reviews("card_script_refused") == [
                f"card|{card.serial}|health|{day}", f"card|{card.serial}|visit|{day}"]  # fmt: skip
            health = pos_records.health(conns[0])
            assert isinstance(health, HealthData) and health.allergies == ("PCN", "SUL")

            # A card whose health file was changed outside the centre: reviewed at its next use.
            state = conns[0]._card.state  # type: ignore[attr-defined]
            lines = await settle(0, "DAY-5", ("IM", ()))  # sees the update: no longer pending
            assert pending() == [False] and not reviews("card_health_mismatch")
            altered = bytearray(state.binary[0x19])
            altered[1:4] = b"AB-"
            state.binary[0x19] = bytes(altered)
            await settle(0, "DAY-6", ("IM", ()))
            assert reviews("card_health_mismatch") == [f"card|{card.serial}"]

            # The whole visit file, reconciled: DAY-3's copy is not on the card (its script was
            # refused) and is no difference; an older record altered on the chip (DAY-4's, the
            # card's record 3: another diagnosis) goes to review at the card's next use.
            assert not reviews("card_visit_mismatch")
            older = Visit.decode(state.visits[2])
            state.visits[2] = dataclasses.replace(older, diagnoses=("F32.9",)).encode()
            lines = await settle(0, "DAY-7", ("IM", ()))
            assert "  visit recorded on the card" in lines, lines
            query = (
                "SELECT reference, detail FROM review_items WHERE reason = 'card_visit_mismatch'"
            )
            assert rows_of(db, query) == [
                (f"card|{card.serial}|bill|{older.bill_id}", FILE_DIFFERS)]  # fmt: skip
        finally:
            for pos in poses:
                await pos.link.close()

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=1) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))


def test_the_update_reaches_the_card_and_clears_on_sqlite_and_postgresql(
    tmp_path: Path, backend: str
) -> None:
    """The same way on either database: kept pending, written at the next use, no longer
    pending at the following contact; the book through the HIS within the consent window."""

    async def scenario(daemon: Daemon) -> None:
        psam = daemon.first_psam()
        card = CardOnFile(*daemon.sql(
            "SELECT card_no, application_serial, cardholder_id FROM cards ORDER BY card_no LIMIT 1"
        )[0])  # fmt: skip
        at = psam.institution_id
        token = await asyncio.to_thread(medical_reference, daemon, at)
        conns, keys = await issue_book_cards(daemon, [card])
        link = await terminal_link(daemon, psam.terminal_id, at, tmp_path / "pos.json",
                                   daemon.app.terminal_port, 5.0)  # fmt: skip
        pos = Pos(link, conns[0], await issue_psam(daemon, psam, keys.purchase),
                  pan=card.card_no, pin=PIN)  # fmt: skip

        def his(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return his_call(daemon.app.http_port, at, token, method, path, body)

        async def settle(number: str) -> list[str]:
            body = {"his_bill_no": number, "card_no": card.card_no,
                    "service_date": now().date().isoformat(), "lines": DRUG}  # fmt: skip
            status, bill = await asyncio.to_thread(his, "POST", "/bills", body)
            assert status == 201, bill
            total = bill["split"]["total_fen"]
            return await pos.settle(bill["bill_id"], total, personal="cash", visit=("IM", ()))

        def pending() -> list[bool]:
            return [bool(row[0]) for row in daemon.sql("SELECT pending FROM card_health")]

        try:
            await pos.sign_on()
            status, _ = await asyncio.to_thread(his, "PUT", f"/cards/{card.card_no}/health", HEALTH)
            assert status == 202 and pending() == [True]
            assert UPDATED in await settle("BOTH-1")
            assert pending() == [True]
            assert UPDATED not in await settle("BOTH-2")
            assert pending() == [False]
            status, book = await asyncio.to_thread(his, "GET", f"/cards/{card.card_no}/book")
            assert status == 200 and book["health"]["blood_type"] == "O+", book
            assert len(book["visits"]) == 2 and book["visits"][0]["institution_id"] == at
            rows = daemon.sql("SELECT institution_id, application_serial FROM card_consents")
            assert [tuple(row) for row in rows] == [(at, card.serial)]
        finally:
            await pos.link.close()

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=1, backend=backend) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))

"""Health data written into the card's record book by the issuer (switch.card_io.record_book):
the emergency block is readable without the PIN, the whole file after it, its data check code
verifies at the centre's HSM, and a changed byte does not."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from messages.card_records import DONOR_YES, HealthData
from simulators import pos_records, terminal_card
from switch.card_io import record_book
from switch.card_io.connection import expect
from tests.support.card_book import issue_book_cards
from tests.support.daemon import Daemon, run
from tests.support.kiosk import PIN
from tests.support.on_file import first_card

HEALTH = HealthData(
    "AB-", ("PCN", "NSAID"), ("PM",), "13800138000", DONOR_YES, ("E11.9", "I10"), "H001",
    "20261207093000",
)  # fmt: skip


def test_initial_health_data_are_written_and_checked(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        (card,), keys = await issue_book_cards(daemon, [on_file])
        serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
        await record_book.write_health(card, daemon.hsm, keys, serial, HEALTH)

        expect(card, bytes.fromhex("00A4040006D15600000503"), "SELECT")  # no PIN
        emergency = pos_records.emergency(card)
        assert emergency is not None
        assert (emergency.blood_type, emergency.allergies) == ("AB-", ("PCN", "NSAID"))
        assert emergency.emergency_phone == "13800138000" and emergency.implants == ("PM",)
        assert card.transmit(bytes.fromhex("00B0990060"))[1] == 0x6982  # the rest: PIN first
        terminal_card.open_application(card, PIN)
        assert pos_records.health(card) == HEALTH
        raw = expect(card, bytes.fromhex("00B0990060"), "READ 0019")
        assert await record_book.check_health(daemon.hsm, keys, serial, raw)
        tampered = raw[:1] + b"O+ " + raw[4:]
        assert not await record_book.check_health(daemon.hsm, keys, serial, tampered)
        lines = pos_records.book_lines(card)
        assert lines[0].startswith("health data (updated 20261207093000 by H001): blood AB-")

        with pytest.raises(record_book.NoRecordKeyError):
            await record_book.write_health(card, daemon.hsm, replace(keys, record=None),
                                           serial, HEALTH)  # fmt: skip

    run(tmp_path, scenario)

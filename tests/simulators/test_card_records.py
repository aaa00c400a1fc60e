"""The virtual card's record book (specs/card-layout.md): what it lets anyone read, what only
after VERIFY, and that it writes only what the record key's MAC covers, for its own challenge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from messages.card_records import (
    DONOR_YES,
    Emergency,
    HealthData,
    Visit,
    append_visit_command,
    read_health_command,
    read_visit_command,
    update_health_command,
)
from simulators.card import CardKey, CardState, VirtualCard
from simulators.card.state import KEY_APP_MAINT
from tests.support.card_scripts import book_card, scripted
from tests.support.cards import DAMK, SELECT_APP, call, ok, v4_card

VERIFY = "0020000003123456"
VISIT = Visit("20261207", "H001", "IM", ("J45.9", "I10"), "9054CA9CBE34A38E", 12000, 3000,
              8000, 1000)  # fmt: skip
HEALTH = HealthData("O+", ("PCN",), ("PM",), "13800138000", DONOR_YES, ("E11.9",), "H001",
                    "20261207093000")  # fmt: skip


def test_a_scripted_visit_is_appended_and_read_back_newest_first_after_verify() -> None:
    card = book_card()
    older = Visit("20261201", "H002", "SURG", (), "0000000000000001", 500, 0, 0, 500)
    ok(card, scripted(card, append_visit_command(older)))
    ok(card, scripted(card, append_visit_command(VISIT)))
    assert call(card, read_visit_command(1))[1] == 0x6982  # no PIN yet
    ok(card, VERIFY)
    assert Visit.decode(ok(card, read_visit_command(1))) == VISIT
    assert Visit.decode(ok(card, read_visit_command(2))) == older
    assert call(card, read_visit_command(3))[1] == 0x6A83


def test_the_visit_file_is_cyclic_keeping_the_newest_ten() -> None:
    card = book_card()
    for n in range(12):
        visit = Visit("20261207", "H001", "IM", (), f"{n:016X}", n, 0, 0, n)
        ok(card, scripted(card, append_visit_command(visit)))
    ok(card, VERIFY)
    assert Visit.decode(ok(card, read_visit_command(1))).bill_id == f"{11:016X}"
    assert Visit.decode(ok(card, read_visit_command(10))).bill_id == f"{2:016X}"
    assert call(card, read_visit_command(11))[1] == 0x6A83


def test_a_forged_mac_a_replay_and_a_plain_write_are_refused() -> None:
    card = book_card()
    command = append_visit_command(VISIT)
    genuine = scripted(card, command)
    forged = genuine[:-4] + bytes(4)
    ok(card, "0084000004")
    assert call(card, forged)[1] == 0x6988  # forged: 6988
    assert call(card, genuine)[1] == 0x6984  # its challenge was used (by the forgery): 6984
    ok(card, scripted(card, command))
    assert call(card, genuine)[1] == 0x6984  # replayed with no challenge pending
    ok(card, "0084000004")
    assert call(card, genuine)[1] == 0x6988  # replayed against a new challenge
    assert call(card, scripted(card, command, DAMK))[1] == 0x6988  # the DAMK does not write
    plain = bytes.fromhex("00E200D048") + VISIT.encode()  # a terminal's own write, no MAC
    assert call(card, plain)[1] == 0x6982
    ok(card, VERIFY)
    assert len(card.state.visits) == 1


def test_health_data_emergency_block_open_the_rest_after_verify() -> None:
    card = book_card()
    data = HEALTH.encode() + bytes.fromhex("A1B2C3D4")
    ok(card, scripted(card, update_health_command(data)))
    emergency = Emergency.decode(ok(card, read_health_command(0, 48)))
    assert emergency is not None and emergency.blood_type == "O+"
    assert emergency.allergies == ("PCN",) and emergency.implants == ("PM",)
    assert call(card, read_health_command())[1] == 0x6982
    ok(card, VERIFY)
    assert HealthData.decode(ok(card, read_health_command())) == HEALTH
    assert call(card, "00DC01D404" + "00" * 4)[1] == 0x6A81  # visits are never rewritten


@pytest.mark.parametrize("ins", ["E2", "D6"])
def test_a_card_without_the_record_key_refuses_every_write(ins: str) -> None:
    card = v4_card()
    ok(card, SELECT_APP)
    command = (
        append_visit_command(VISIT)
        if ins == "E2"
        else update_health_command(HEALTH.encode() + bytes(4))
    )
    assert call(card, scripted(card, command))[1] == 0x6A88


def test_the_virtual_card_answers_the_specs_golden_traces() -> None:
    """specs/card-layout.md's write and read, step by step, on a card with the spec's DRK,
    serial, PIN and challenge."""
    text = (Path(__file__).resolve().parents[2] / "specs" / "card-layout.md").read_text()

    def golden(name: str) -> bytes:
        found = re.search(rf"^\| {re.escape(name)} \| `([0-9A-F]+)` \|$", text, re.MULTILINE)
        assert found, name
        return bytes.fromhex(found.group(1))

    state = CardState.blank(golden("application serial"), bytes(16), pin=golden("PIN"))
    state.keys[(KEY_APP_MAINT, 2)] = CardKey(KEY_APP_MAINT, 2, 1, 0, golden("DRK"))
    challenges = [golden("challenge"), golden("health challenge")]
    card = VirtualCard(state, random_bytes=lambda n: challenges.pop(0))
    blocks = [
        body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.DOTALL) if not lang
    ][:3]  # the visit's write and read, the health update (the signatures': test_card_signatures)
    steps = [line for block in blocks for line in block.splitlines() if line]
    assert len(steps) == 30
    for command, expected in zip(steps[::2], steps[1::2], strict=True):
        assert command.startswith("> ") and expected.startswith("< ")
        assert card.process(bytes.fromhex(command[2:])).hex().upper() == expected[2:], command

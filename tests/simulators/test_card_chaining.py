"""Chained scripts and EF 001B on the virtual card (specs/card-layout.md "Multi-command
scripts", "Signatures"): a script of several commands under one challenge, every command but
the last with CLA 14, command i MACed with IV challenge ‖ i; the card keeps the challenge only
after an accepted CLA-14 command and only for command i+1. Refusals answer as the single
command scheme does: 6988 forged, 6984 no challenge, 6982 plain write."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from messages.card_records import (
    DONOR_YES,
    HealthData,
    read_health_command,
    update_health_command,
)
from messages.card_signatures import read_signature_command, update_signature_command
from simulators.card import VirtualCard
from tests.support.card_scripts import book_card, chained
from tests.support.cards import call, ok

VERIFY = "0020000003123456"
HEALTH = HealthData("O+", ("PCN",), ("PM",), "13800138000", DONOR_YES, ("E11.9",), "H001",
                    "20261207093000")  # fmt: skip
FILE = HEALTH.encode() + bytes.fromhex("01020304")


def part(n: int) -> bytes:
    return bytes([n]) * 128


def health_script(card: VirtualCard) -> list[bytes]:
    """Signature records 3 and 4 (CLA 14), then EF 0019 (CLA 04), for a fresh challenge."""
    challenge = ok(card, "0084000004")
    return chained(challenge, [
        update_signature_command(3, part(3), chained=True),
        update_signature_command(4, part(4), chained=True),
        update_health_command(FILE),
    ])  # fmt: skip


def test_a_chained_script_is_written_under_one_challenge() -> None:
    card = book_card()
    script = health_script(card)
    assert script[0][0] == 0x14 and script[1][0] == 0x14 and script[2][0] == 0x04
    for command in script:
        ok(card, command)
    assert card.state.signatures[2:] == [part(3), part(4)]
    ok(card, VERIFY)
    assert ok(card, read_health_command()) == FILE
    assert call(card, script[0])[1] == 0x6984  # the whole script again: a replay
    assert call(card, script[2])[1] == 0x6984


def test_a_one_command_script_is_the_single_command_scheme() -> None:
    card = book_card()
    challenge = ok(card, "0084000004")
    (single,) = chained(challenge, [update_health_command(FILE)])
    ok(card, single)
    assert card.state.binary[0x19] == FILE


def test_out_of_order_forged_or_interrupted_commands_end_the_script() -> None:
    card = book_card()
    script = health_script(card)
    assert call(card, script[1])[1] == 0x6988  # command 1 first: MACed for IV ‖ 1, card wants 0
    assert call(card, script[0])[1] == 0x6984  # the refusal ended the script

    script = health_script(card)
    ok(card, script[0])
    assert call(card, script[1][:-1] + bytes([script[1][-1] ^ 1]))[1] == 0x6988  # forged
    assert call(card, script[2])[1] == 0x6984

    script = health_script(card)
    ok(card, script[0])
    ok(card, read_signature_command(1))  # any other command ends the script
    assert call(card, script[1])[1] == 0x6984

    script = health_script(card)
    ok(card, script[0])
    ok(card, script[1])
    assert call(card, script[0])[1] == 0x6988  # a command again: MACed for 0, the card wants 2
    assert call(card, script[2])[1] == 0x6984


def test_plain_writes_and_misplaced_chaining_are_refused() -> None:
    card = book_card()
    ok(card, "0084000004")
    plain = bytes([0x00]) + update_signature_command(1, part(9), chained=False)[1:] + bytes(4)
    assert call(card, plain)[1] == 0x6982  # a terminal writing by itself
    ok(card, "0084000004")
    assert call(card, "14B201DC80")[1] == 0x6884  # chaining bit on a read
    assert call(card, "14A4040006D15600000503")[1] == 0x6884
    visit_update = bytes.fromhex("04DC01D44C") + bytes(76)
    assert call(card, visit_update)[1] == 0x6A81  # the visits stay append-only
    (record_5,) = chained(ok(card, "0084000004"), [bytes.fromhex("04DC05DC84") + part(5)])
    assert call(card, record_5)[1] == 0x6A86  # EF 001B has 4 records
    assert card.state.signatures == [bytes(128)] * 4


def test_signature_records_holder_open_health_after_verify() -> None:
    card = book_card()
    challenge = ok(card, "0084000004")
    script = chained(challenge, [update_signature_command(n, part(n), chained=n < 4)
                                 for n in (1, 2, 3, 4)])  # fmt: skip
    for command in script:
        ok(card, command)
    assert ok(card, read_signature_command(1)) == part(1)
    assert ok(card, read_signature_command(2)) == part(2)
    assert call(card, read_signature_command(3))[1] == 0x6982
    assert call(card, "00B205DC80")[1] == 0x6A83
    ok(card, VERIFY)
    assert ok(card, read_signature_command(4)) == part(4)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 4),
    bad=st.one_of(st.none(), st.integers(0, 3)),
    how=st.sampled_from(["forge", "skip", "interrupt"]),
)
def test_the_card_accepts_exactly_the_commands_before_the_first_bad_one(
    length: int, bad: int | None, how: str
) -> None:
    card = book_card()
    challenge = ok(card, "0084000004")
    commands = [update_signature_command(n + 1, part(n + 1), chained=n + 1 < length)
                for n in range(length)]  # fmt: skip
    script = chained(challenge, commands)
    bad = None if bad is None or bad >= length else bad
    interrupted_before_start = how == "interrupt" and bad == 0  # no script under way yet:
    answers = []  # a read before the first command leaves the challenge as it is
    for i, command in enumerate(script):
        if i == bad:
            if how == "forge":
                command = command[:-4] + bytes(4)
            elif how == "skip":
                continue
            else:
                ok(card, read_signature_command(1))
        answers.append(call(card, command)[1])
    written = [record != bytes(128) for record in card.state.signatures[:length]]
    if bad is None or interrupted_before_start:
        assert answers == [0x9000] * length and all(written)
        return
    kept = answers[:bad]
    assert kept == [0x9000] * bad and written == [i < bad for i in range(length)]
    rest = answers[bad:]
    if rest:  # the first bad one is refused (6988: forged or out of order; 6984: ended)
        assert rest[0] in (0x6988, 0x6984) and all(sw == 0x6984 for sw in rest[1:])

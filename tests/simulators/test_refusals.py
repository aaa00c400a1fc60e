"""Every refusal a simulator prints names the code, its meaning and what the terminal does —
from the one table the spec's response-code table is generated from."""

from __future__ import annotations

from pathlib import Path

from messages.outcome import Outcome
from messages.terminal import TerminalReply
from messages.terminal_actions import TERMINAL_ACTIONS, explain
from simulators.terminal_link import answered, refused

SPEC = Path(__file__).resolve().parents[2] / "specs" / "terminal-interface.md"


def test_every_response_code_says_what_the_terminal_does() -> None:
    assert set(TERMINAL_ACTIONS) == set(Outcome)
    text = SPEC.read_text(encoding="utf-8")
    for outcome, action in TERMINAL_ACTIONS.items():
        assert action and f"| {outcome.code} | " in text and action in text


def test_a_refusal_shows_code_meaning_and_what_to_do() -> None:
    reply = TerminalReply(stan="000001", terminal_id="P0000001", institution_id="h1",
                          batch="000001", response_code="13", mti="0210",
                          processing_code="000000", condition_code="00", txn_type="22",
                          network_code="000")
    error = refused(reply, "settlement")
    message = str(error)
    assert error.code == "13"
    assert message.startswith("settlement refused: 13 invalid amount: check field 4")
    assert answered("00") == "00"
    assert answered("A0") == "A0 mac error: " + TERMINAL_ACTIONS[Outcome.MAC_ERROR]
    assert explain("ZZ").startswith("ZZ (a code the terminal interface does not define)")

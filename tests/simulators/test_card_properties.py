"""Properties: whatever APDU arrives, the card and the PSAM answer with a status word and keep
a state that survives its file; a balance only moves through CREDIT/DEBIT; no clear key or PIN
shows in a repr."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hsm import cardcrypto
from simulators.card import CardState
from simulators.psam import PsamState, VirtualPsam
from tests.support.cards import CONTROL, DAMK, SELECT_APP, V4_KEY, call, ok, v4_card
from tests.support.psam import v4_psam

INS = [0x20, 0x24, 0x16, 0x18, 0x1E, 0x50, 0x52, 0x54, 0x58, 0x5A, 0x5C, 0x5E, 0x70, 0x72,
       0x84, 0xA4, 0xB0, 0xB2, 0xD4, 0xD6]
apdus = st.builds(
    lambda cla, ins, p1, p2, data, le: bytes([cla, ins, p1, p2])
    + (bytes([len(data)]) + data if data else b"") + (bytes([le]) if le is not None else b""),
    st.sampled_from([0x00, 0x04, 0x80, 0x84, 0xB0]),
    st.sampled_from(INS),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=40),
    st.none() | st.integers(0, 255),
)


@given(st.lists(apdus | st.binary(max_size=12), max_size=25))
def test_any_apdus_get_a_status_word(commands: list[bytes]) -> None:
    card = v4_card()
    ok(card, SELECT_APP)
    ok(card, "0020000003123456")
    balances = {p: purse.balance for p, purse in card.state.purses.items()}
    for raw in commands:
        out = card.process(raw)
        assert len(out) >= 2
    assert CardState.from_json(card.state.to_json()) == card.state
    # without a MAC that verifies, no command moves money
    assert {p: purse.balance for p, purse in card.state.purses.items()} == balances


@given(st.lists(apdus | st.binary(max_size=12), max_size=25))
def test_psam_answers_anything(commands: list[bytes]) -> None:
    psam = v4_psam()
    for raw in commands:
        assert len(psam.process(raw)) >= 2
    assert PsamState.from_json(psam.state.to_json()) == psam.state


def test_no_key_or_pin_in_a_repr() -> None:
    card = v4_card()
    text = repr(card.state) + repr(card) + repr(VirtualPsam(v4_psam().state).state)
    for secret in (V4_KEY, CONTROL, DAMK):
        assert secret.hex() not in text.lower()
        assert repr(secret) not in text
    assert "123456" not in text


def test_card_block_locks_everything() -> None:
    card = v4_card()
    ok(card, SELECT_APP)
    challenge = ok(card, "0084000004")
    body = bytes.fromhex("8416000004")
    ok(card, body + cardcrypto.line_mac(DAMK, challenge, body))
    assert call(card, SELECT_APP)[1] == 0x6A81
    assert call(card, "0084000004")[1] == 0x6A81

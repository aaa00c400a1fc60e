"""encode∘decode is the identity for every transaction of both tables, requests and replies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages import bank, terminal_table
from messages.codec import Codec
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL
from tests.support import message_strategies as s

TERMINAL_CODEC = Codec(TERMINAL)
BANK_CODEC = Codec(BANK)
TERMINAL_ROWS = [row.name for row, _, _ in terminal_table.TABLE]
BANK_ROWS = [row.name for row, _ in bank.TABLE]


def terminal_round_trip(typed: Any) -> None:
    message = terminal_table.build(typed)
    payload = TERMINAL_CODEC.encode(message)
    decoded = TERMINAL_CODEC.decode(payload)
    assert decoded == message
    assert terminal_table.parse(decoded) == typed
    assert TERMINAL_CODEC.encode(decoded) == payload


def bank_round_trip(typed: Any) -> None:
    message = bank.build(typed)
    payload = BANK_CODEC.encode(message)
    decoded = BANK_CODEC.decode(payload)
    assert decoded == message
    assert bank.parse(decoded) == typed
    assert BANK_CODEC.encode(decoded) == payload


@pytest.mark.parametrize("index", range(len(TERMINAL_ROWS)), ids=TERMINAL_ROWS)
@given(data=st.data())
def test_terminal_request_and_reply_round_trip(index: int, data: st.DataObject) -> None:
    request = s.terminal_request(index)
    terminal_round_trip(data.draw(request))
    terminal_round_trip(data.draw(s.terminal_reply(request, index)))


@given(data=st.data())
def test_terminal_reversal_round_trip(data: st.DataObject) -> None:
    reversal = s.terminal_reversal()
    terminal_round_trip(data.draw(reversal))
    request = data.draw(reversal)
    terminal_round_trip(terminal_table.reply_to(request, "00"))


@pytest.mark.parametrize("index", range(len(BANK_ROWS)), ids=BANK_ROWS)
@given(data=st.data())
def test_bank_request_and_reply_round_trip(index: int, data: st.DataObject) -> None:
    request = s.bank_request(index)
    bank_round_trip(data.draw(request))
    bank_round_trip(data.draw(s.bank_reply(request)))


@given(data=st.data())
def test_bank_reversal_round_trip(data: st.DataObject) -> None:
    reversal = s.bank_reversal()
    bank_round_trip(data.draw(reversal))
    bank_round_trip(data.draw(s.bank_reply(reversal)))

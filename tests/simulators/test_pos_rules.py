"""What a POS decides alone: an offline purchase within the downloaded limits (floor, count,
age) and off the local blacklist; each refusal says why."""

from __future__ import annotations

import doctest
from datetime import datetime, timedelta

import pytest

from simulators import pos_rules
from simulators.pos_rules import check_offline
from simulators.terminal_link import TerminalError, TerminalState

NOW = datetime(2026, 11, 25, 12, 0, 0)


def state(records: int = 0, age_h: int = 1) -> TerminalState:
    found = TerminalState(None, floor_fen=1_000, count_max=3, age_max_h=24, blacklist={"aa"})
    at = (NOW - timedelta(hours=age_h)).isoformat()
    found.records = [{"amount_fen": 100, "at": at, "online": False} for _ in range(records)]
    found.records.append({"amount_fen": 100, "at": "2000-01-01T00:00:00", "online": True})
    return found


def test_doctests() -> None:
    assert doctest.testmod(pos_rules, optionflags=doctest.ELLIPSIS).failed == 0


def test_within_the_limits_an_offline_purchase_is_allowed() -> None:
    check_offline(state(records=2), "bb", 1_000, NOW)  # online records do not count


@pytest.mark.parametrize(
    ("terminal", "serial", "amount", "words"),
    [
        (state(), "aa", 100, "card on the blacklist"),
        (TerminalState(None), "bb", 100, "no offline limits downloaded"),
        (state(), "bb", 1_001, "above the offline floor limit 10.00"),
        (state(records=3), "bb", 100, "3 offline records, the most allowed"),
        (state(records=1, age_h=25), "bb", 100, "older than 24 h"),
    ],
)
def test_beyond_the_limits_the_refusal_says_why(
    terminal: TerminalState, serial: str, amount: int, words: str
) -> None:
    with pytest.raises(TerminalError, match=words):
        check_offline(terminal, serial, amount, NOW)

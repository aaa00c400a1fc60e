"""Run the card modules' doctest examples (the default testpaths do not include simulators/)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "simulators.card.apdu",
    "simulators.card.factory",
    "simulators.card.state",
    "simulators.psam",
    "switch.card_io.connection",
    "switch.card_io.issuance",
    "switch.card_io.personalize",
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0

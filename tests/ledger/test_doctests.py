"""Run the ledger modules' doctest examples (the default testpaths do not include ledger/)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ledger

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(ledger.__path__, "ledger.")
    if ".migrations" not in info.name and not info.name.startswith("ledger.medical")
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0

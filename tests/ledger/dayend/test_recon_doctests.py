"""Run the doctest examples of the reconciliation and statement modules (ledger/ is not in the
default testpaths)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "ledger.dayend.bank_files",
    "ledger.dayend.return_file",
    "ledger.dayend.statements_render",
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0

"""The bank contract suite's deployments (`bank_banks.serve`), one each for the whole package:
`test_bank_dialects.py` and `test_bank_key_change.py` share them rather than start another
daemon. Imports nothing of medswitch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.bank_banks import Banks, serve


@pytest.fixture(scope="package")
def three_banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banks]:
    """One bank per preset, as the preset has it."""
    yield from serve(tmp_path_factory.mktemp("bank-contract"), "presets")


@pytest.fixture(scope="package")
def overriding_banks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banks]:
    """Banks whose sections override their preset's settings."""
    yield from serve(tmp_path_factory.mktemp("bank-overrides"), "overrides")

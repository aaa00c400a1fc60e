"""Fixtures shared by the switch tests."""

from __future__ import annotations

import pytest

from tests.support.daemon import BACKENDS
from tests.support.pcsc import pcscd  # noqa: F401 (the PC/SC tests' fixture)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The daemon's database: every test taking this runs on SQLite and on PostgreSQL."""
    return str(request.param)

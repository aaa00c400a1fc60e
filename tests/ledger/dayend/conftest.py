"""The day-end tests' world: a demo deployment, a key home with the banks' file keys, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.demo import init_demo
from tests.support.dayend import Cli, make_keys, personal_of


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    db = tmp_path / "medswitch.db"
    home, components = make_keys(tmp_path)
    init_demo(db, 8, personal=personal_of(home, components))
    return Cli(db, home, components, tmp_path / "dayend", CliRunner())

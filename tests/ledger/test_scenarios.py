"""The scenario table against the in-memory model (SQL backends: test_sql_scenarios.py)."""

from __future__ import annotations

import asyncio

from ledger.memory import MemoryLedger
from tests.support.scenario_table import run_scenario


def test_scenario_table_on_the_model() -> None:
    asyncio.run(run_scenario(MemoryLedger()))

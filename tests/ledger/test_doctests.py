"""Run the ledger modules' doctest examples (the default testpaths do not include ledger/)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "ledger.core",
    "ledger.demo",
    "ledger.events",
    "ledger.events.balance_check",
    "ledger.events.common",
    "ledger.events.funds",
    "ledger.events.loads",
    "ledger.events.purchases",
    "ledger.crossing",
    "ledger.writer.engine",
    "ledger.writer.jobs",
    "ledger.writer.process",
    "ledger.writer.store",
    "ledger.writer.wire",
    "ledger.kinds",
    "ledger.memory",
    "ledger.migrate",
    "ledger.pg_connection",
    "ledger.pg_ledger",
    "ledger.pg_accounts",
    "ledger.pg_calls",
    "ledger.pg_post",
    "ledger.pg_write",
    "ledger.schema",
    "ledger.sql_rows",
    "ledger.sqlite_ledger",
    "ledger.state",
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0

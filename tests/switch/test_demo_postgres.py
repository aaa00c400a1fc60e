"""`medswitch demo init --database postgresql://...`: the same deployment as on SQLite for the
same seed (every account's balance equal), refused a second time; `medswitch ledger` there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.demo import init_demo
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger
from switch.cli.groups import demo_group
from switch.cli.ledger import ledger_group
from tests.support.operators import reader_env
from tests.support.personal import demo_keys
from tests.support.pg import DSN, fresh_schema

pytestmark = pytest.mark.postgres


def test_demo_init_on_postgres_equals_the_sqlite_demo(tmp_path: Path) -> None:
    init_demo(tmp_path / "demo.db", 30, personal=demo_keys(tmp_path), seed=3)

    async def main() -> None:
        async with fresh_schema() as schema:
            url = f"{DSN}?schema={schema}"
            runner = CliRunner()
            args = ["init", "--cardholders", "30", "--seed", "3", "--database", url]
            result = await asyncio.to_thread(runner.invoke, demo_group, args)
            assert result.exit_code == 0, result.output
            assert "30 cardholders" in result.output
            again = await asyncio.to_thread(runner.invoke, demo_group, args)
            assert again.exit_code != 0 and "already holds a deployment" in again.output
            env = await asyncio.to_thread(reader_env, url, tmp_path / "tokens")  # an auditor
            for command in (["migrate"], ["balance", "pf:0000000001"], ["reviews"]):
                done = await asyncio.to_thread(
                    runner.invoke, ledger_group, [*command, "--database", url], env=env
                )
                assert done.exit_code == 0, done.output
                if command[0] == "balance":
                    assert "pf:0000000001" in done.output and " yuan" in done.output
            pg = await PgLedger.open(DSN, schema=schema, migrate=False)
            lite = SqliteLedger.open(tmp_path / "demo.db")
            try:
                assert await pg.all_balances() == await lite.all_balances()
            finally:
                await pg.close()
                await lite.close()

    asyncio.run(asyncio.wait_for(main(), timeout=120))

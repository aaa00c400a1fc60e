"""`medswitch serve --workers 2` with ``[bank] enabled`` on PostgreSQL: both workers serve the
bank link on the same port (SO_REUSEPORT) beside the terminal port, and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from switch.demo.keys import provision, write_config
from tests.support.daemon import make_pg_database
from tests.support.pg import DSN, fresh_schema
from tests.support.workers import SCRIPT, WORKERS, free_ports


@pytest.mark.postgres
def test_two_workers_share_the_bank_port_on_postgresql(tmp_path: Path) -> None:
    async def main() -> None:
        async with fresh_schema() as schema:
            url = f"{DSN}?schema={schema}"
            await make_pg_database(url, {"POS00001": "pos"})
            await provision(tmp_path, ["POS00001"])
            terminal_port, http_port, bank_port = free_ports(3)
            write_config(tmp_path, terminal_port=terminal_port, http_port=http_port)
            env = {
                **os.environ,
                "MEDSWITCH_HOME": str(tmp_path),
                "MEDSWITCH_DATABASE_URL": url,
                "MEDSWITCH_BANK_ENABLED": "true",
                "MEDSWITCH_BANK_PORT": str(bank_port),
            }
            process = subprocess.Popen(
                [SCRIPT, "serve", "--workers", str(WORKERS)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                lines = await asyncio.to_thread(_serving_lines, process)
                assert all(f"bank link on 127.0.0.1:{bank_port}" in line for line in lines)
                process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(process.wait, 60) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)

    asyncio.run(asyncio.wait_for(main(), timeout=180))


def _serving_lines(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(WORKERS)]
    assert all("medswitch serving" in line for line in lines), lines
    return lines

"""The estate commands (`medswitch terminals|institutions|…`) as a test runs them against a
running daemon's database — a SQLite file or a PostgreSQL URL — as a logged-in operator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner, Result

from switch.cli import main
from tests.support.daemon import Daemon
from tests.support.operators import as_operator


def medswitch(db: Path | str, token: Path, *args: str) -> Result:
    """`medswitch ARGS` on the daemon's database (a SQLite file or a PostgreSQL URL)."""
    where = ["--database", db] if isinstance(db, str) else ["--db", str(db)]
    return CliRunner().invoke(main, [*args, *where], env=as_operator(token))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


async def cli(db: Path | str, token: Path, *args: str) -> Result:
    """A command while the daemon runs on this loop (the CLI runs its own loop)."""
    return await asyncio.to_thread(medswitch, db, token, *args)


def database_of(daemon: Daemon) -> Path | str:
    """The daemon's database as a command names it."""
    url = daemon.app.stores.url
    return url if url.startswith("postgres") else Path(url.removeprefix("sqlite:///"))

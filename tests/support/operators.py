"""Operators for tests: enrolled and logged in through switch/operators.py (the same code as
`medswitch operators add|login`), their token files ready for MEDSWITCH_OPERATOR_TOKEN_FILE.
The first enrolment on a database bootstraps an ``admin`` operator as the deployment would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from switch.cli.auth import TOKEN_FILE_ENV, write_token
from switch.database import open_back_office
from switch.operators import add_operator, has_operators, login

T = TypeVar("T")
ADMIN = "admin"


def password_of(name: str) -> str:
    return f"{name}-password"  # TEST ONLY


def on_engine(database: Path | str, use: Callable[[Any], T]) -> T:
    """``use(engine)`` on the back office of a SQLite file or a database URL, in a thread of
    its own (callable from a test's running event loop too)."""
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    found: list[T] = []

    async def run() -> None:
        office = await open_back_office(url)
        try:
            found.append(use(office.engine))
        finally:
            await office.close()

    thread = threading.Thread(target=lambda: asyncio.run(run()))
    thread.start()
    thread.join(60)
    assert found, "enrolment did not finish"
    return found[0]


def enrol(database: Path | str, tokens: Path, name: str, *roles: str) -> Path:
    """Operator ``name`` with ``roles``, logged in: its token file (under ``tokens``)."""

    def use(engine: Any) -> Path:
        if not has_operators(engine):
            add_operator(engine, None, ADMIN, ("admin",), password_of(ADMIN))
        if name != ADMIN:
            admin, _ = login(engine, ADMIN, password_of(ADMIN), 3600)
            add_operator(engine, admin, name, roles, password_of(name))
        _, token = login(engine, name, password_of(name), 3600)
        path = tokens / f"{name}.token"
        write_token(path, token)
        return path

    return on_engine(database, use)


def as_operator(token_file: Path) -> dict[str, str]:
    """The environment a command runs in as that operator."""
    return {TOKEN_FILE_ENV: str(token_file)}

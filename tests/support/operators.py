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
from switch.operators import VALID_NAME, add_operator, has_operators, list_operators, login

T = TypeVar("T")
ADMIN = "admin"
READER = "reader"  # an auditor: reads only
DEMO_ADMIN = "demo-admin"  # a demo deployment's (switch/demo/operators.py), TEST ONLY


def password_of(name: str) -> str:
    return f"{name}-password"  # TEST ONLY


def on_engine(database: Path | str, use: Callable[[Any], T]) -> T:
    """``use(engine)`` on the back office of a SQLite file or a database URL, in a thread of
    its own (callable from a test's running event loop too)."""
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    found: list[T] = []
    failed: list[BaseException] = []

    async def run() -> None:
        office = await open_back_office(url)
        try:
            found.append(use(office.engine))
        except BaseException as error:  # handed to the caller's thread
            failed.append(error)
        finally:
            await office.close()

    thread = threading.Thread(target=lambda: asyncio.run(run()))
    thread.start()
    thread.join(60)
    if failed:
        raise failed[0]
    assert found, "enrolment did not finish"
    return found[0]


def enrol(database: Path | str, tokens: Path, name: str, *roles: str) -> Path:
    """Operator ``name`` with ``roles`` (enrolled unless known), logged in: its token file
    (under ``tokens``)."""

    def use(engine: Any) -> Path:
        if not has_operators(engine):
            add_operator(engine, None, ADMIN, ("admin",), password_of(ADMIN))
        known = {operator.name for operator in list_operators(engine)}
        if name not in known:  # else logged in again; the demo's own admin on a demo's
            by = ADMIN if ADMIN in known or DEMO_ADMIN not in known else DEMO_ADMIN
            admin, _ = login(engine, by, password_of(by), 3600)
            add_operator(engine, admin, name, roles, password_of(name))
        _, token = login(engine, name, password_of(name), 3600)
        path = tokens / f"{name}.token"
        write_token(path, token)
        return path

    return on_engine(database, use)


def as_operator(token_file: Path) -> dict[str, str]:
    """The environment a command runs in as that operator."""
    return {TOKEN_FILE_ENV: str(token_file)}


#: What an operator named in a test's `--operator NAME` may do: the back office's roles.
BACK_OFFICE_ROLES = ("maker", "checker", "auditor", "key_custodian")


class NamedOperators:
    """The operators a test's commands name with ``--operator NAME``, each enrolled and logged
    in on first use (every back-office role: maker-checker then rests on identities alone), so
    a command runs authenticated as the operator it names."""

    def __init__(self, database: Path | str, tokens: Path) -> None:
        self.database = database
        self.tokens = tokens
        self._known: dict[str, Path] = {}

    def token(self, name: str) -> Path:
        if name not in self._known:
            self._known[name] = enrol(self.database, self.tokens, name, *BACK_OFFICE_ROLES)
        return self._known[name]

    def reader(self) -> Path:
        """The token of ``READER``, an auditor only: who runs the commands that only read."""
        if READER not in self._known:
            self._known[READER] = enrol(self.database, self.tokens, READER, "auditor")
        return self._known[READER]

    def env(self, args: list[str] | tuple[str, ...]) -> dict[str, str]:
        """The environment of the operator ``args`` name (``--operator NAME``); with no
        ``--operator``, the auditor ``READER``'s; with a name no operator can have, nobody's."""
        names = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--operator"]
        if not names:
            return as_operator(self.reader())
        if not VALID_NAME.fullmatch(names[-1]):  # no one logged in
            return as_operator(self.tokens / "nobody.token")
        return as_operator(self.token(names[-1]))


def reader_env(database: Path | str, tokens: Path) -> dict[str, str]:
    """The environment of the auditor ``READER`` (enrolled and logged in on ``database``)."""
    return as_operator(enrol(database, tokens, READER, "auditor"))

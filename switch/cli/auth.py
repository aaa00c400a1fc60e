"""How a command knows its operator: the token `medswitch operators login NAME` wrote, read
from ``--token-file`` / MEDSWITCH_OPERATOR_TOKEN_FILE (default
``$MEDSWITCH_HOME/operators/<login user>.token``), or, with no token file and a terminal, the
operator's name and password at prompts. The identity so authenticated — never a name typed on
the command line — acts, is checked for its role, is compared by maker-checker and is written to
the audit log. A command's ``--operator NAME``, where one is still accepted, must name the
authenticated operator (a script's assertion), or the command is refused.
"""

from __future__ import annotations

import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from switch.cli.common import Database, deployment_home, with_engine

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_FILE_ENV = "MEDSWITCH_OPERATOR_TOKEN_FILE"


def token_file(given: Path | None = None) -> Path:
    if given is not None:
        return given
    from_env = os.environ.get(TOKEN_FILE_ENV)
    if from_env:
        return Path(from_env)
    return deployment_home() / "operators" / f"{getpass.getuser()}.token"


def authenticate(
    engine: Any, role: str | None = None, *, typed: str | None = None,
    token_path: Path | None = None,
) -> Any:
    """The authenticated :class:`switch.operators.Operator` (with ``role``, when given); one-line
    errors for a missing, expired or refused login, a missing role, or a typed name that is
    not the authenticated operator's."""
    from switch.operators import AuthError, login, operator_of_token, require

    path = token_file(token_path)
    try:
        if path.exists():
            operator = operator_of_token(engine, path.read_text().strip())
        elif sys.stdin.isatty():
            name = click.prompt("operator")
            password = getpass.getpass(f"{name}, your password: ")
            operator, _ = login(engine, name, password, 60)  # this command's login only
        else:
            raise AuthError(
                f"no operator logged in (no token file {path}): run `medswitch operators "
                f"login NAME` or set {TOKEN_FILE_ENV}"
            )
        if typed is not None and typed != operator.name:
            raise AuthError(
                f"--operator {typed} is not the authenticated operator ({operator.name}): "
                "an operator acts under their own login only"
            )
        return operator if role is None else require(operator, role)
    except AuthError as error:
        raise click.ClickException(str(error)) from None


def write_token(path: Path, token: str) -> None:
    """The token file: the operator's alone (0600), replaced whole."""
    path.parent.mkdir(0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    temporary.replace(path)


def operator_login(role: str | None, *, reads: bool = False) -> Callable[[F], F]:
    """A command run by an authenticated operator (with ``role``): adds ``--token-file`` and
    ``--operator NAME`` (optional; when given it must name the authenticated operator) and
    gives the command ``operator``, the authenticated name — unless it ``reads`` only (any
    role may: it is then not given the name). Goes below `database_options` (it
    authenticates on the command's ``database``)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            typed, path = kwargs.pop("operator"), kwargs.pop("token_file")
            database: Database = kwargs["database"]
            operator = with_engine(
                database, lambda engine: authenticate(engine, role, typed=typed, token_path=path)
            )
            if not reads:
                kwargs["operator"] = operator.name
            return function(*args, **kwargs)

        for option in (
            click.option("--operator", default=None,
                         help="The operator you are logged in as (checked; optional)."),
            click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                         default=None,
                         help=f"The login token (env {TOKEN_FILE_ENV}, default "
                         "$MEDSWITCH_HOME/operators/<login user>.token)."),
        ):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def logged_in(function: F) -> F:
    """A command that only reads the back office: run by any authenticated operator (an
    auditor suffices); see :func:`operator_login`."""
    return operator_login(None, reads=True)(function)


class HelpFirstGroup(click.Group):
    """A group whose callback authenticates (`medswitch keys`): a sub-command's ``--help`` is
    answered before it, without a login. Only when a help option is among the sub-command's
    arguments is it parsed first (and then exits with its help); otherwise as click does."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and name is not None:
            _help_first(ctx, name, command, rest)
        return name, command, rest


def _help_first(ctx: click.Context, name: str, command: click.Command, rest: list[str]) -> None:
    if isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        inner = command.get_command(ctx, rest[0])
        if inner is not None:  # a nested group's command (`keys key-card status --help`)
            with click.Context(command, info_name=name, parent=ctx) as group:
                _help_first(group, rest[0], inner, rest[1:])
            return
    if any(arg in ctx.help_option_names for arg in rest):
        command.make_context(name, list(rest), parent=ctx)  # help: prints it, exits


#: `medswitch keys` sub-commands that change nothing (any authenticated role may run them).
KEY_READS = frozenset({"list", "policy", "age"})


def key_operator(home: Path, typed: str | None, command: str | None) -> str:
    """Who performs a key ceremony step in the key home ``home``: once the deployment has
    operators, the authenticated operator with the ``key_custodian`` role for a step that
    changes something (``--operator`` is then only checked), any authenticated operator for a
    read (:data:`KEY_READS`: an auditor suffices). The deployment's operators are in
    its database: MEDSWITCH_DATABASE_URL when set, else ``home/medswitch.db``. Before there are
    any — a blank deployment's first ceremony, which comes before its database — the step is
    recorded under ``--operator`` or the login name, as the audit log has always shown it."""
    return key_login(home, typed, None if command in KEY_READS else "key_custodian")


def key_login(home: Path, typed: str | None, role: str | None) -> str:
    """The operator of a command on the key home ``home`` (with ``role``; any role for
    None), as :func:`key_operator` finds them."""
    import sqlite3

    url = os.environ.get("MEDSWITCH_DATABASE_URL") or ""
    if not url:
        db = home / "medswitch.db"
        if not db.exists():
            return typed or getpass.getuser()
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
                (count,) = connection.execute("SELECT count(*) FROM operators").fetchone()
        except sqlite3.Error:  # a database from before operators: none enrolled
            count = 0
        if not count:
            return typed or getpass.getuser()
        url = f"sqlite:///{db}"
    from switch.operators import has_operators

    def who(engine: Any) -> str:
        if not has_operators(engine):
            return typed or getpass.getuser()
        return str(authenticate(engine, role, typed=typed).name)

    return with_engine(url, who)

"""`medswitch operators add|list|disable|enable|passwd|login|logout|whoami`: the people who run
the centre (switch/operators.py). The very first `operators add` (an admin) needs no login:
the deployment's bootstrap; after it, an admin adds, disables and resets operators.

    medswitch operators add alice --role admin                 # bootstrap: first operator
    medswitch operators login alice                            # writes the token file
    medswitch operators add bob --role maker                   # as alice (admin)
    MEDSWITCH_OPERATOR_TOKEN_FILE=bob.token medswitch operators login bob

Passwords are read at hidden prompts (twice when set); from a script, on standard input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from switch.cli import auth
from switch.cli.auth import authenticate, write_token
from switch.cli.common import Database, database_options, with_engine
from switch.operators import ROLES, AuthError

token_option = click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The login token file (env MEDSWITCH_OPERATOR_TOKEN_FILE, default "
    "$MEDSWITCH_HOME/operators/<login user>.token).",
)


def _run(database: Database, use: Any) -> Any:
    def wrapped(engine: Any) -> Any:
        try:
            return use(engine)
        except AuthError as error:
            raise click.ClickException(str(error)) from None

    return with_engine(database, wrapped)


@click.group("operators")
def operators_group() -> None:
    """Operators: roles, passwords (scrypt), logins for back-office and key commands."""


@operators_group.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="A role (repeat).")
@token_option
@database_options
def add(name: str, roles: tuple[str, ...], token_file: Path | None, database: Database) -> None:
    """Enrol an operator with roles; the first one (an admin) bootstraps the deployment."""
    from switch.operators import add_operator, has_operators

    def use(engine: Any) -> None:
        actor = authenticate(engine, "admin", token_path=token_file) if has_operators(
            engine) else None
        password = click.prompt(f"password for {name}", hide_input=True,
                                confirmation_prompt=True)
        added = add_operator(engine, actor, name, roles, password)
        click.echo(f"operator {added.name}: {', '.join(added.roles)}")

    _run(database, use)


@operators_group.command("list")
@token_option
@database_options
def list_(token_file: Path | None, database: Database) -> None:
    """The operators, their roles and status."""
    from switch.operators import list_operators

    def use(engine: Any) -> None:
        authenticate(engine, token_path=token_file)
        for operator in list_operators(engine):
            click.echo(f"{operator.name:<20} {operator.status:<9} {','.join(operator.roles)}")

    _run(database, use)


def _status(name: str, status: str, token_file: Path | None, database: Database) -> None:
    from switch.operators import set_status

    def use(engine: Any) -> None:
        actor = authenticate(engine, "admin", token_path=token_file)
        changed = set_status(engine, actor, name, status)
        click.echo(f"operator {changed.name}: {changed.status}")

    _run(database, use)


@operators_group.command("disable")
@click.argument("name")
@token_option
@database_options
def disable(name: str, token_file: Path | None, database: Database) -> None:
    """Disable an operator: their logins stop working at once."""
    _status(name, "disabled", token_file, database)


@operators_group.command("enable")
@click.argument("name")
@token_option
@database_options
def enable(name: str, token_file: Path | None, database: Database) -> None:
    """Enable a disabled operator again."""
    _status(name, "active", token_file, database)


@operators_group.command("passwd")
@click.argument("name", required=False)
@token_option
@database_options
def passwd(name: str | None, token_file: Path | None, database: Database) -> None:
    """Change one's own password (the current one asked), or reset another's (admin)."""
    from switch.operators import change_password

    def use(engine: Any) -> None:
        actor = authenticate(engine, token_path=token_file)
        whose = name or actor.name
        current = None
        if whose == actor.name:
            current = click.prompt("current password", hide_input=True)
        password = click.prompt(f"new password for {whose}", hide_input=True,
                                confirmation_prompt=True)
        change_password(engine, actor, whose, password, current)
        click.echo(f"operator {whose}: password changed; their logins must be renewed")

    _run(database, use)


@operators_group.command("login")
@click.argument("name")
@click.option("--hours", default=8.0, show_default=True, type=click.FloatRange(0.02, 12),
              help="How long the login lasts.")
@token_option
@database_options
def login_command(name: str, hours: float, token_file: Path | None, database: Database) -> None:
    """Log in: the password is checked and a token written to the token file (0600)."""
    from switch.operators import login

    path = auth.token_file(token_file)

    def use(engine: Any) -> None:
        password = click.prompt(f"{name}, your password", hide_input=True)
        operator, token = login(engine, name, password, int(hours * 3600))
        write_token(path, token)
        click.echo(f"logged in as {operator.name} ({', '.join(operator.roles)}) until the "
                   f"token expires in {hours:g} h; token file {path}")

    _run(database, use)


@operators_group.command("logout")
@token_option
@database_options
def logout_command(token_file: Path | None, database: Database) -> None:
    """End the login: the token is forgotten and its file removed."""
    from switch.operators import logout

    path = auth.token_file(token_file)
    if not path.exists():
        raise click.ClickException(f"no token file {path}")

    def use(engine: Any) -> None:
        logout(engine, path.read_text().strip())
        path.unlink()
        click.echo("logged out")

    _run(database, use)


@operators_group.command("whoami")
@token_option
@database_options
def whoami(token_file: Path | None, database: Database) -> None:
    """The authenticated operator and roles."""

    def use(engine: Any) -> None:
        operator = authenticate(engine, token_path=token_file)
        click.echo(f"{operator.name} ({', '.join(operator.roles)})")

    _run(database, use)


def enrol_demo(url: str) -> list[str]:
    """The demo's TEST ONLY operators (switch/demo/operators.py), unless the database has
    operators: what was done, for the start-up's one line."""
    from switch.demo.operators import enrol_demo_operators

    names = with_engine(url, enrol_demo_operators)
    if not names:
        return []
    return [f"operators {', '.join(names)} (TEST ONLY, password NAME-password)"]

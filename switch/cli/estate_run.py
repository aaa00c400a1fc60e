"""What the estate commands share (`medswitch terminals|institutions|parameters|blacklist|
bills`): the deployment's database, the authenticated operator (``maker`` for a change, any
role for a read), one-line refusals, and rows printed as text or JSON (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from switch.cli.auth import authenticate
from switch.cli.common import Database, database_options, with_engine

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Row(Protocol):
    def as_json(self) -> dict[str, object]: ...


def estate_options(function: F) -> F:
    """The database options, ``--token-file`` and ``--json``."""
    function = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)
    function = click.option(
        "--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="The operator's login token (env MEDSWITCH_OPERATOR_TOKEN_FILE).",
    )(function)
    return database_options(function)


def run(
    database: Database, token_file: Path | None, role: str | None,
    use: Callable[[Any, str], T],
) -> T:
    """``use(engine, operator name)`` as the authenticated operator (with ``role``)."""
    from switch.estate.common import EstateError

    def call(engine: Any) -> T:
        operator = authenticate(engine, role, token_path=token_file)
        try:
            return use(engine, operator.name)
        except EstateError as error:
            raise click.ClickException(str(error)) from None

    return with_engine(database, call)


def show(rows: Row | Sequence[Row], as_json: bool, line: Callable[[Any], str]) -> None:
    """Rows as lines of text (``line``), or as JSON (one object, or a list)."""
    if as_json:
        data: object = (
            [row.as_json() for row in rows] if isinstance(rows, Sequence) else rows.as_json()
        )
        click.echo(json.dumps(data, ensure_ascii=False, indent=1))
        return
    for row in rows if isinstance(rows, Sequence) else [rows]:
        click.echo(line(row))

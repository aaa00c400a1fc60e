"""`medswitch statements institution ID --from D --to D --out DIR` and `medswitch statements unit
ID ...`: party statements as CSV and HTML (ledger/dayend/party_statements.py), over business
dates closed at the ``[dayend]`` cut-over. The same ledger and range write the same bytes; card
numbers never appear. The database is the deployment's, SQLite or PostgreSQL (`switch.cli.common`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import click
from sqlalchemy import Engine

from ledger.dayend.calendar import CalendarError, Cutover, parse_date
from ledger.dayend.party_statements import (
    StatementError,
    institution_statement,
    unit_statement,
)
from ledger.dayend.statements_render import PartyStatement, render_csv, render_html
from switch.cli.auth import logged_in
from switch.cli.common import Database, check_database, database_options, with_engine

Build = Callable[[Engine, str, dt.date, dt.date, Cutover], PartyStatement]


def _cutover(database: Database) -> Cutover:
    config = database.config()
    try:
        return Cutover.parse(config.dayend.cutover, config.dayend.timezone or config.timezone)
    except CalendarError as error:
        raise click.ClickException(str(error)) from None


def _date(text: str, hint: str) -> dt.date:
    try:
        return parse_date(text)
    except CalendarError as error:
        raise click.BadParameter(str(error), param_hint=hint) from None


def _write(
    build: Build, party: str, date_from: str, date_to: str, out: Path, database: Database
) -> None:
    url = check_database(database)
    first, last = _date(date_from, "--from"), _date(date_to, "--to")
    cutover = _cutover(database)
    try:
        statement = with_engine(url, lambda engine: build(engine, party, first, last, cutover))
    except StatementError as error:
        raise click.ClickException(str(error)) from None
    out.mkdir(parents=True, exist_ok=True)
    for suffix, data in ((".csv", render_csv(statement)), (".html", render_html(statement))):
        path = out / (statement.stem + suffix)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
        click.echo(f"wrote {path} ({len(data)} bytes)")


def _range_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option("--from", "date_from", required=True, help="First business date."),
            click.option("--to", "date_to", required=True, help="Last business date."),
            click.option(
                "--out",
                type=click.Path(file_okay=False, path_type=Path),
                default=Path("."),
                show_default=True,
                help="Directory for the CSV and HTML files.",
            ),
            database_options,
            logged_in,
        ]
    ):
        function = option(function)
    return function


@click.group("statements")
def statements_group() -> None:
    """Statements for institutions and employer units (CSV and HTML)."""


@statements_group.command("institution")
@click.argument("institution_id")
@_range_options
def institution(
    institution_id: str, date_from: str, date_to: str, out: Path, database: Database
) -> None:
    """What a hospital or pharmacy was settled (by kind of money, date, category and class) and
    what it was paid."""
    _write(institution_statement, institution_id, date_from, date_to, out, database)


@statements_group.command("unit")
@click.argument("unit_id")
@_range_options
def unit(unit_id: str, date_from: str, date_to: str, out: Path, database: Database) -> None:
    """An employer unit's contributions (by period, received, owed) and its members' spending."""
    _write(unit_statement, unit_id, date_from, date_to, out, database)

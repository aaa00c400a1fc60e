"""`medswitch cards list|show` and `medswitch psams list|show|disable|enable|unbind`: the
estate's cards (numbers masked) and PSAMs (switch/estate), by an authenticated operator;
changes need the ``maker`` role and go to the audit log."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from switch.cli.cards.context import Context, pass_context
from switch.estate import lookups
from switch.estate import terminals as term
from switch.estate.common import EstateError

T = TypeVar("T")


def _run(c: Context, role: str | None, use: Callable[[Any, str], T]) -> T:
    who = c.authenticate(role)
    engine = c.engine()
    try:
        return use(engine, who)
    except EstateError as error:
        raise click.ClickException(str(error)) from None
    finally:
        engine.dispose()


def _card_line(card: lookups.Card) -> str:
    replaced = f" replaced by {card.replaced_by}" if card.replaced_by else ""
    return (f"{card.card}  serial {card.application_serial}  holder {card.cardholder_id}  "
            f"key version {card.key_version}  {card.status}  expires {card.expiry}{replaced}")


def _echo(rows: Any, as_json: bool, line: Callable[[Any], str]) -> None:
    listed = rows if isinstance(rows, list) else [rows]
    if as_json:
        data = [row.as_json() for row in listed]
        click.echo(json.dumps(data if isinstance(rows, list) else data[0], indent=1))
        return
    for row in listed:
        click.echo(line(row))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command("list")
@click.option("--status", default=None)
@click.option("--cardholder", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@json_option
@pass_context
def list_cards(c: Context, status: str | None, cardholder: str | None, limit: int,
               as_json: bool) -> None:
    """Cards (numbers masked), by number."""
    rows = _run(c, None, lambda e, _: lookups.list_cards(
        e, status=status, cardholder=cardholder, limit=limit))
    _echo(rows, as_json, _card_line)


@click.command("show")
@click.argument("card")
@json_option
@pass_context
def show_card(c: Context, card: str, as_json: bool) -> None:
    """One card, by number or application serial (shown masked)."""
    _echo(_run(c, None, lambda e, _: lookups.show_card(e, card)), as_json, _card_line)


def _psam_line(p: term.Psam) -> str:
    return (f"{p.serial:<20} terminal number {p.psam_terminal_no}  {p.institution_id:<16} "
            f"bound to {p.terminal_id or '-':<8}  key version {p.key_version}  {p.status}")


@click.command("list")
@click.option("--institution", default=None)
@click.option("--status", default=None, type=click.Choice(term.PSAM_STATUSES))
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 1000))
@json_option
@pass_context
def list_psams(c: Context, institution: str | None, status: str | None, limit: int,
               as_json: bool) -> None:
    """PSAMs, by serial."""
    rows = _run(c, None, lambda e, _: term.list_psams(
        e, institution=institution, status=status, limit=limit))
    _echo(rows, as_json, _psam_line)


@click.command("show")
@click.argument("serial")
@json_option
@pass_context
def show_psam(c: Context, serial: str, as_json: bool) -> None:
    """One PSAM."""
    _echo(_run(c, None, lambda e, _: term.show_psam(e, serial)), as_json, _psam_line)


@click.command("disable")
@click.argument("serial")
@pass_context
def disable_psam(c: Context, serial: str) -> None:
    """Disable a PSAM (unbound from its terminal; its TACs still post)."""
    click.echo(_psam_line(_run(c, "maker", lambda e, who: term.set_psam_status(
        e, who, serial, "disabled"))))


@click.command("enable")
@click.argument("serial")
@pass_context
def enable_psam(c: Context, serial: str) -> None:
    """Enable a disabled PSAM (bind it with `medswitch terminals replace-psam`)."""
    click.echo(_psam_line(_run(c, "maker", lambda e, who: term.set_psam_status(
        e, who, serial, "active"))))


@click.command("unbind")
@click.argument("serial")
@pass_context
def unbind_psam(c: Context, serial: str) -> None:
    """Unbind a PSAM from its terminal (before the terminal moves institution)."""
    click.echo(_psam_line(_run(c, "maker", lambda e, who: term.unbind_psam(e, who, serial))))

"""`medswitch terminals` and `medswitch institutions`: the estate's terminals (with their PSAMs)
and institutions, by command instead of SQL (switch/estate). Every change is made by an
authenticated operator with the ``maker`` role and written to the audit log; a running daemon
sees it at the terminal's next message (a disabled terminal, or one of a disabled institution,
is answered 97).

    medswitch terminals add P0000100 --institution h1 --kind pos [--group night]
    medswitch terminals disable P0000100
    medswitch terminals move P0000100 --institution h2 | --group NAME | --no-group
    medswitch terminals replace-psam P0000100 --psam SERIAL
    medswitch institutions add h9 --kind hospital --name "…" --level 2
    medswitch institutions authorise-health p3 | revoke-health h9
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from switch.cli.common import Database
from switch.cli.estate_run import estate_options, run, show
from switch.estate import institutions as inst
from switch.estate import terminals as term


def _terminal_line(t: term.Terminal) -> str:
    return (f"{t.terminal_id}  {t.institution_id:<16} {t.kind:<12} {t.status:<9} "
            f"batch {t.batch_no:06d}  group {t.group or '-'}  PSAM {t.psam_serial or '-'}")


@click.group("terminals")
def terminals_group() -> None:
    """Terminals: add, list, show, disable, enable, move, replace the PSAM (audited)."""


@terminals_group.command("add")
@click.argument("terminal_id")
@click.option("--institution", required=True, help="The institution it belongs to.")
@click.option("--kind", required=True, type=click.Choice(term.KINDS))
@click.option("--group", default=None, help="Its parameter group (medswitch parameters).")
@estate_options
def add(terminal_id: str, institution: str, kind: str, group: str | None,
        token_file: Path | None, as_json: bool, database: Database) -> None:
    """Register a terminal (its TMK is made by `medswitch keys`)."""
    added = run(database, token_file, "maker", lambda e, who: term.add_terminal(
        e, who, terminal_id, institution, kind, group))
    show(added, as_json, _terminal_line)


@terminals_group.command("list")
@click.option("--institution", default=None)
@click.option("--status", default=None, type=click.Choice(term.TERMINAL_STATUSES))
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 1000))
@estate_options
def list_(institution: str | None, status: str | None, limit: int, token_file: Path | None,
          as_json: bool, database: Database) -> None:
    """Terminals, by id."""
    rows = run(database, token_file, None, lambda e, _: term.list_terminals(
        e, institution=institution, status=status, limit=limit))
    show(rows, as_json, _terminal_line)


@terminals_group.command("show")
@click.argument("terminal_id")
@estate_options
def show_(terminal_id: str, token_file: Path | None, as_json: bool, database: Database) -> None:
    """One terminal, its PSAM and the parameters it downloads next."""
    from switch.estate.parameters import for_terminal

    def use(engine: Any, _: str) -> tuple[term.Terminal, Any]:
        return term.show_terminal(engine, terminal_id), for_terminal(engine, terminal_id)

    found, parameters = run(database, token_file, None, use)
    if as_json:
        data = found.as_json()
        data["parameters_version"] = parameters.version if parameters else 0
        click.echo(json.dumps(data, indent=1))
        return
    click.echo(_terminal_line(found))
    click.echo("next parameter download: " + (
        f"version {parameters.version}" if parameters else "the configuration's [offline]"))


def _status(terminal_id: str, status: str, token_file: Path | None, as_json: bool,
            database: Database) -> None:
    changed = run(database, token_file, "maker", lambda e, who: term.set_terminal_status(
        e, who, terminal_id, status))
    show(changed, as_json, _terminal_line)


@terminals_group.command("disable")
@click.argument("terminal_id")
@estate_options
def disable(terminal_id: str, token_file: Path | None, as_json: bool, database: Database) -> None:
    """Disable a terminal: its next message is answered 97."""
    _status(terminal_id, "disabled", token_file, as_json, database)


@terminals_group.command("enable")
@click.argument("terminal_id")
@estate_options
def enable(terminal_id: str, token_file: Path | None, as_json: bool, database: Database) -> None:
    """Enable a disabled terminal again."""
    _status(terminal_id, "active", token_file, as_json, database)


@terminals_group.command("move")
@click.argument("terminal_id")
@click.option("--institution", default=None, help="Its new institution.")
@click.option("--group", default=None, help="Its new parameter group.")
@click.option("--no-group", is_flag=True, help="No parameter group any more.")
@estate_options
def move(terminal_id: str, institution: str | None, group: str | None, no_group: bool,
         token_file: Path | None, as_json: bool, database: Database) -> None:
    """Move a terminal to another institution and/or parameter group."""
    moved = run(database, token_file, "maker", lambda e, who: term.move_terminal(
        e, who, terminal_id, institution_id=institution, group=group, no_group=no_group))
    show(moved, as_json, _terminal_line)


@terminals_group.command("replace-psam")
@click.argument("terminal_id")
@click.option("--psam", "serial", required=True, help="The new PSAM's serial.")
@estate_options
def replace_psam(terminal_id: str, serial: str, token_file: Path | None, as_json: bool,
                 database: Database) -> None:
    """Bind another PSAM of the institution to the terminal; the old one is retired."""
    replaced = run(database, token_file, "maker", lambda e, who: term.replace_psam(
        e, who, terminal_id, serial))
    show(replaced, as_json, _terminal_line)


# -- institutions -------------------------------------------------------------------------------
def _institution_line(i: inst.Institution) -> str:
    level = f"level {i.level}" if i.level else "-"
    health = "health writer" if i.health_writer else "-"
    return (f"{i.institution_id:<16} {i.kind:<13} {level:<8} {i.status:<9} "
            f"{i.terminals:>4} terminal(s)  {health:<13}  {i.name}")


@click.group("institutions")
def institutions_group() -> None:
    """Institutions: add, list, show, disable, enable, authorise-health, revoke-health
    (audited)."""


@institutions_group.command("add")
@click.argument("institution_id")
@click.option("--kind", required=True, type=click.Choice(inst.KINDS))
@click.option("--name", required=True)
@click.option("--level", default=None, type=click.IntRange(1, 3), help="Hospital level 1..3.")
@click.option("--bank", "bank_id", default=None, help="Its settlement bank (an institution).")
@estate_options
def add_institution(institution_id: str, kind: str, name: str, level: int | None,
                    bank_id: str | None, token_file: Path | None, as_json: bool,
                    database: Database) -> None:
    """Register an institution."""
    added = run(database, token_file, "maker", lambda e, who: inst.add_institution(
        e, who, institution_id, kind, name, level=level, settlement_bank_id=bank_id))
    show(added, as_json, _institution_line)


@institutions_group.command("list")
@click.option("--kind", default=None, type=click.Choice(inst.KINDS))
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 1000))
@estate_options
def list_institutions(kind: str | None, limit: int, token_file: Path | None, as_json: bool,
                      database: Database) -> None:
    """Institutions, by id, with their terminal counts."""
    rows = run(database, token_file, None, lambda e, _: inst.list_institutions(
        e, kind=kind, limit=limit))
    show(rows, as_json, _institution_line)


@institutions_group.command("show")
@click.argument("institution_id")
@estate_options
def show_institution(institution_id: str, token_file: Path | None, as_json: bool,
                     database: Database) -> None:
    """One institution."""
    found = run(database, token_file, None, lambda e, _: inst.show_institution(e, institution_id))
    show(found, as_json, _institution_line)


@institutions_group.command("disable")
@click.argument("institution_id")
@estate_options
def disable_institution(institution_id: str, token_file: Path | None, as_json: bool,
                        database: Database) -> None:
    """Disable an institution: its terminals are answered 97."""
    changed = run(database, token_file, "maker", lambda e, who: inst.set_institution_status(
        e, who, institution_id, "disabled"))
    show(changed, as_json, _institution_line)


@institutions_group.command("enable")
@click.argument("institution_id")
@estate_options
def enable_institution(institution_id: str, token_file: Path | None, as_json: bool,
                       database: Database) -> None:
    """Enable a disabled institution again."""
    changed = run(database, token_file, "maker", lambda e, who: inst.set_institution_status(
        e, who, institution_id, "active"))
    show(changed, as_json, _institution_line)


@institutions_group.command("authorise-health")
@click.argument("institution_id")
@estate_options
def authorise_health(institution_id: str, token_file: Path | None, as_json: bool,
                     database: Database) -> None:
    """Authorise an institution to send cardholders' health data (HIS PUT …/health)."""
    changed = run(database, token_file, "maker", lambda e, who: inst.set_health_writer(
        e, who, institution_id, True))
    show(changed, as_json, _institution_line)


@institutions_group.command("revoke-health")
@click.argument("institution_id")
@estate_options
def revoke_health(institution_id: str, token_file: Path | None, as_json: bool,
                  database: Database) -> None:
    """Revoke it: the institution's health data are refused (403) and go to review."""
    changed = run(database, token_file, "maker", lambda e, who: inst.set_health_writer(
        e, who, institution_id, False))
    show(changed, as_json, _institution_line)

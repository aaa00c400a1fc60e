"""`medswitch parameters`, `medswitch blacklist` and `medswitch bills`: versioned terminal
parameters, the blacklist by version, and bills (card numbers masked) — switch/estate.

    medswitch parameters set --institution h1 --floor-fen 30000 --count-max 40 --age-max-h 48
    medswitch parameters list | show VERSION
    medswitch blacklist add CARD_OR_SERIAL --reason fraud --note "…"
    medswitch blacklist remove CARD_OR_SERIAL --note "…"
    medswitch bills list --institution h1 | show BILL_ID
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from switch.cli.common import Database
from switch.cli.estate_run import estate_options, run, show
from switch.estate import blacklist as bl
from switch.estate import lookups
from switch.estate import parameters as params


def _when(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _parameters_line(p: params.ParameterSet) -> str:
    categories = ",".join(p.categories.splitlines())
    return (f"version {p.version:<5} {p.scope:<28} floor {p.floor_fen} fen, {p.count_max} "
            f"records, {p.age_max_h} h  [{categories}]  {_when(p.created_at_us)} {p.created_by}")


@click.group("parameters")
def parameters_group() -> None:
    """Terminal parameters: versioned offline limits and categories per group or institution."""


@parameters_group.command("set")
@click.option("--institution", default=None, help="For this institution's terminals.")
@click.option("--group", default=None, help="For the terminals of this group.")
@click.option("--floor-fen", required=True, type=click.IntRange(0, 2**32 - 1))
@click.option("--count-max", required=True, type=click.IntRange(0, 65535))
@click.option("--age-max-h", required=True, type=click.IntRange(0, 65535))
@click.option("--categories", default=params.DEFAULT_CATEGORIES, show_default=True,
              help="code=name lines (or separated by \\n).")
@estate_options
def set_(institution: str | None, group: str | None, floor_fen: int, count_max: int,
         age_max_h: int, categories: str, token_file: Path | None, as_json: bool,
         database: Database) -> None:
    """A new parameter version (every terminal's without --institution or --group); terminals
    get it at their next parameter download."""
    def use(engine: object, who: str) -> params.ParameterSet:
        scope = params.scope_of(institution, group)
        return params.set_parameters(engine, who, scope, floor_fen=floor_fen,
                                     count_max=count_max, age_max_h=age_max_h,
                                     categories=categories)

    show(run(database, token_file, "maker", use), as_json, _parameters_line)


@parameters_group.command("list")
@click.option("--institution", default=None)
@click.option("--group", default=None)
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 1000))
@estate_options
def list_parameters(institution: str | None, group: str | None, limit: int,
                    token_file: Path | None, as_json: bool, database: Database) -> None:
    """Parameter versions, newest first (of one scope with --institution or --group)."""
    def use(engine: object, _: str) -> list[params.ParameterSet]:
        scope = params.scope_of(institution, group) if institution or group else None
        return params.list_parameters(engine, scope=scope, limit=limit)

    show(run(database, token_file, None, use), as_json, _parameters_line)


@parameters_group.command("show")
@click.argument("version", type=click.IntRange(1))
@estate_options
def show_parameters(version: int, token_file: Path | None, as_json: bool,
                    database: Database) -> None:
    """One parameter version."""
    found = run(database, token_file, None, lambda e, _: params.show_parameters(e, version))
    show(found, as_json, _parameters_line)


# -- the blacklist ------------------------------------------------------------------------------
def _entry_line(e: bl.Entry) -> str:
    removed = f" removed in version {e.removed_version}" if e.removed_version else ""
    return (f"{e.application_serial:<20} version {e.version:<5} {e.reason:<10} "
            f"{_when(e.added_at_us)}{removed}  {e.note or ''}").rstrip()


@click.group("blacklist")
def blacklist_group() -> None:
    """The blacklist: entries with reasons, each change a new version for the terminals."""


@blacklist_group.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Removed entries too.")
@click.option("--after-version", default=0, type=click.IntRange(0))
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 1000))
@estate_options
def list_blacklist(include_removed: bool, after_version: int, limit: int,
                   token_file: Path | None, as_json: bool, database: Database) -> None:
    """The list's version and its entries in force (or all), newest first."""
    version, entries = run(database, token_file, None, lambda e, _: bl.list_entries(
        e, include_removed=include_removed, after_version=after_version, limit=limit))
    if as_json:
        click.echo(json.dumps(
            {"version": version, "entries": [entry.as_json() for entry in entries]}, indent=1))
        return
    click.echo(f"blacklist version {version}: {len(entries)} entry(ies)")
    show(entries, False, _entry_line)


@blacklist_group.command("add")
@click.argument("card")
@click.option("--reason", required=True, type=click.Choice(bl.OPERATOR_REASONS))
@click.option("--note", default="", help="Why (in the list and the audit log).")
@estate_options
def add_blacklist(card: str, reason: str, note: str, token_file: Path | None, as_json: bool,
                  database: Database) -> None:
    """Add a card (its number or application serial) under a new version."""
    added = run(database, token_file, "maker", lambda e, who: bl.add_entry(
        e, who, card, reason, note))
    show(added, as_json, _entry_line)


@blacklist_group.command("remove")
@click.argument("card")
@click.option("--note", required=True, help="Why it leaves the list.")
@estate_options
def remove_blacklist(card: str, note: str, token_file: Path | None, as_json: bool,
                     database: Database) -> None:
    """Remove a card's entries (an operator's, not a loss report's) under a new version."""
    removed = run(database, token_file, "maker", lambda e, who: bl.remove_entry(
        e, who, card, note))
    show(removed, as_json, _entry_line)


# -- bills --------------------------------------------------------------------------------------
def _bill_line(b: lookups.Bill) -> str:
    return (f"{b.bill_id}  {b.institution_id:<16} {b.his_bill_no:<16} {b.card}  {b.state:<10} "
            f"{b.service_date}  eligible {b.eligible_fen} pooled {b.pooled_fen} personal "
            f"{b.personal_account_fen} self-pay {b.self_pay_fen} fen")


@click.group("bills")
def bills_group() -> None:
    """Medical bills: list and show (card numbers masked)."""


@bills_group.command("list")
@click.option("--institution", default=None)
@click.option("--state", default=None)
@click.option("--card", default=None, help="A card number.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@estate_options
def list_bills(institution: str | None, state: str | None, card: str | None, limit: int,
               token_file: Path | None, as_json: bool, database: Database) -> None:
    """Bills, newest first."""
    rows = run(database, token_file, None, lambda e, _: lookups.list_bills(
        e, institution=institution, state=state, card=card, limit=limit))
    show(rows, as_json, _bill_line)


@bills_group.command("show")
@click.argument("bill_id")
@estate_options
def show_bill(bill_id: str, token_file: Path | None, as_json: bool, database: Database) -> None:
    """One bill and its shares."""
    found = run(database, token_file, None, lambda e, _: lookups.show_bill(e, bill_id))
    show(found, as_json, lambda b: _bill_line(b) + f"  {b.items} line(s)")

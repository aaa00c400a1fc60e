"""`medswitch catalogue | policy | authorise | import fee-records | his`: the back office's side
of the medical rules (specs/medical-files.md) and the HIS interface's own server.

The database is the deployment's (`switch.cli.common`: the configured one, `--db FILE` or
`--database URL`, SQLite or PostgreSQL); it is migrated to the current revision when opened
(a SQLite file that does not exist yet is made). Files are MACed under a file
key of the HSM: `--keys-home` (env MEDSWITCH_HOME, as for `medswitch keys`), the LMK formed from
the custodians' component files (`-c`, repeated; prompts when absent), `--file-key ALIAS`.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy import Engine

from ledger.medical import filemac
from ledger.medical.catalogue import KIND as CATALOGUE_KIND
from ledger.medical.catalogue import (
    CatalogueItem,
    CatalogueVersion,
    Coverage,
    build_catalogue,
    catalogue_from_framed,
    diff,
    effective_on,
)
from ledger.medical.fee_import import fee_reviews, import_fee_file
from ledger.medical.policy import PolicyError
from ledger.medical.recordfile import MedicalFileError, parse
from ledger.medical.split import yuan
from ledger.medical.sql_reference import (
    ReferenceData,
    SqlDirectory,
    catalogue_versions,
    digest,
    load_catalogue,
)
from switch.cli.auth import key_login, logged_in, operator_login
from switch.cli.common import (
    Database,
    component_files_option,
    database_options,
    file_key_option,
    hsm_and_key,
    keys_home_option,
    with_back_office,
    with_engine,
)
from switch.key_home import Home

if TYPE_CHECKING:  # the database drivers load when a command runs, not for --help
    from switch.database import BackOffice

T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _now_us() -> int:
    return int(_now().timestamp() * 1_000_000)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)




def _on_engine(database: Database, use: Callable[[Engine], T]) -> T:
    return with_engine(database, use, create=True)


# -- catalogue ----------------------------------------------------------------------------------
@click.group()
def catalogue() -> None:
    """The catalogue of drugs and services (药物标准管理): versions with effective dates."""


@catalogue.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_options
@operator_login("maker")
@keys_home_option
@component_files_option
@file_key_option
def catalogue_import(
    file: Path,
    database: Database,
    operator: str,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """Import a catalogue FILE: its MAC, totals and every record are checked, or nothing is."""
    data = file.read_bytes()
    hsm, key = hsm_and_key(Home(keys_home, operator), component_files, file_key)
    try:
        framed = parse(data, CATALOGUE_KIND)
        _run(filemac.verify(hsm, key, framed))
        version = catalogue_from_framed(framed)
    except MedicalFileError as error:
        raise click.ClickException(f"{file}: refused: {error}") from None

    def store(engine: Engine) -> None:
        previous = [v for v, _ in catalogue_versions(engine) if v < version.number]
        if not ReferenceData(engine).add_catalogue(version, digest(data), _now_us(), operator):
            raise click.ClickException(f"catalogue version {version.number} is already imported")
        click.echo(
            f"catalogue v{version.number} effective {version.effective_from}: "
            f"{len(version.items)} items"
        )
        if previous:
            before = load_catalogue(engine, max(previous))
            assert before is not None
            _echo_diff(before, version)

    _on_engine(database, store)


@catalogue.command("build")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "number", type=int, required=True)
@click.option("--effective-from", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@keys_home_option
@component_files_option
@file_key_option
def catalogue_build(
    csv_file: Path,
    number: int,
    effective_from: dt.datetime,
    out: Path,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """Build a MACed catalogue file from a CSV (code,name,unit,ceiling_fen,class,self_pay_bp;
    a header row) — the drug-standard authority's side, and the demo's."""
    items = {}
    with csv_file.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                item = CatalogueItem(
                    row["code"],
                    row["name"],
                    row["unit"],
                    int(row["ceiling_fen"]),
                    Coverage(row["class"]),
                    int(row["self_pay_bp"] or 0),
                )
            except (KeyError, ValueError) as error:
                raise click.ClickException(f"{csv_file}: {error}") from None
            items[item.code] = item
    version = CatalogueVersion(number, effective_from.date(), items)
    hsm, key = hsm_and_key(Home(keys_home, key_login(keys_home, None, None)), component_files,
                           file_key)  # the key home's HSM: a logged-in operator's, once any
    out.write_bytes(_run(filemac.seal(hsm, key, build_catalogue(version))))
    click.echo(f"{out}: catalogue v{number}, {len(items)} items")


def _catalogue(engine: Engine, number: int | None, on: dt.date | None) -> CatalogueVersion:
    versions = catalogue_versions(engine)
    if number is None:
        headers = [CatalogueVersion(v, day) for v, day in versions]
        chosen = effective_on(headers, on or _now().date())
        if chosen is None:
            raise click.ClickException("no catalogue version in force")
        number = chosen.number
    found = load_catalogue(engine, number)
    if found is None:
        raise click.ClickException(f"no catalogue version {number}")
    return found


@catalogue.command("show")
@click.option("--version", "number", type=int, default=None)
@click.option(
    "--on",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="The version in force on this date (default: today).",
)
@click.option("--code", default=None)
@database_options
@logged_in
def catalogue_show(
    number: int | None, on: dt.datetime | None, code: str | None, database: Database
) -> None:
    """Show a catalogue version (or one item of it)."""
    day = on.date() if on else None
    version = _on_engine(database, lambda engine: _catalogue(engine, number, day))
    click.echo(f"catalogue v{version.number} effective {version.effective_from}")
    for item_code in sorted(version.items):
        if code is None or code == item_code:
            click.echo(_item_line(version.items[item_code]))


def _item_line(item: CatalogueItem) -> str:
    ratio = f" self-pay {item.self_pay_bp / 100:.2f}%" if item.self_pay_bp else ""
    return (
        f"{item.code:<12} {item.coverage.value} {yuan(item.ceiling_fen):>10}/{item.unit}"
        f" {item.name}{ratio}"
    )


def _echo_diff(before: CatalogueVersion, after: CatalogueVersion) -> None:
    change = diff(before, after)
    click.echo(
        f"against v{before.number}: {len(change.added)} added, "
        f"{len(change.removed)} removed, {len(change.changed)} changed"
    )
    for code in change.added:
        click.echo("+ " + _item_line(after.items[code]))
    for code in change.removed:
        click.echo("- " + _item_line(before.items[code]))
    for old, new in change.changed:
        click.echo("~ " + _item_line(old) + "\n  → " + _item_line(new))


@catalogue.command("diff")
@click.argument("before", type=int)
@click.argument("after", type=int)
@database_options
@logged_in
def catalogue_diff(before: int, after: int, database: Database) -> None:
    """What changed from version BEFORE to version AFTER."""

    def show(engine: Engine) -> None:
        _echo_diff(_catalogue(engine, before, None), _catalogue(engine, after, None))

    _on_engine(database, show)


# -- policy -------------------------------------------------------------------------------------
@click.group()
def policy() -> None:
    """The insurance policy per calendar year (a TOML file, specs/medical-files.md §3)."""


@policy.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_options
@operator_login("maker")
def policy_import(file: Path, database: Database, operator: str) -> None:
    """Import a year's policy; a year already stored is refused (policies are not edited)."""
    text = file.read_text(encoding="utf-8")
    try:
        stored = _on_engine(
            database,
            lambda engine: ReferenceData(engine).set_policy(text, _now_us(), operator),
        )
    except (PolicyError, ValueError) as error:
        raise click.ClickException(f"{file}: refused: {error}") from None
    click.echo(
        f"policy {stored.year}: cap {yuan(stored.annual_pooled_cap_fen)}, "
        f"special categories {sorted(stored.special) or 'none'}"
    )


@policy.command("show")
@click.argument("year", type=int)
@database_options
@logged_in
def policy_show(year: int, database: Database) -> None:
    found = _on_engine(database, lambda engine: SqlDirectory(engine).policy(year))
    if found is None:
        raise click.ClickException(f"no policy for {year}")
    click.echo(f"policy {found.year}: annual pooled cap {yuan(found.annual_pooled_cap_fen)}")
    for category, levels in found.deductibles.items():
        click.echo(f"  deductible {category.value}: " + ", ".join(yuan(v) for v in levels))
    for category, table in found.pooled.items():
        for coverage, bps in table.items():
            click.echo(
                f"  pooled {category.value} {coverage.value}: "
                + ", ".join(f"{bp / 100:.2f}%" for bp in bps)
            )
    for special in found.special.values():
        click.echo(
            f"  special {special.code} ({special.name}): "
            + ", ".join(f"{bp / 100:.2f}%" for bp in special.pooled_bp_by_level)
        )


# -- authorise ----------------------------------------------------------------------------------
@click.group()
def authorise() -> None:
    """Special-expense authorisations per person and year (later written to the card)."""


@authorise.command("grant")
@click.argument("person_id")
@click.argument("category")
@click.option("--year", type=int, default=None, help="Default: this year.")
@database_options
@operator_login("maker")
def authorise_grant(
    person_id: str, category: str, year: int | None, database: Database, operator: str
) -> None:
    year = year or _now().year

    def grant(engine: Engine) -> bool:
        found = SqlDirectory(engine).policy(year)
        if found is None or category not in found.special:
            message = f"{category} is not a special category of the {year} policy"
            raise click.ClickException(message)
        return ReferenceData(engine).authorise(person_id, category, year, _now_us(), operator)

    fresh = _on_engine(database, grant)
    click.echo(
        f"{person_id} {'authorised' if fresh else 'already authorised'} for {category} "
        f"in {year}; to be written to the card's authorisation file"
    )


@authorise.command("revoke")
@click.argument("person_id")
@click.argument("category")
@click.option("--year", type=int, default=None)
@database_options
@operator_login("maker")
def authorise_revoke(
    person_id: str, category: str, year: int | None, database: Database, operator: str
) -> None:
    def revoke(engine: Engine) -> bool:
        from switch.estate.common import record

        done = ReferenceData(engine).revoke(person_id, category, year or _now().year, _now_us())
        if done:
            record(engine, operator, "authorise.revoke", person_id, category=category)
        return bool(done)

    done = _on_engine(database, revoke)
    click.echo("revoked" if done else "no such authorisation")


@authorise.command("list")
@click.argument("person_id")
@database_options
@logged_in
def authorise_list(person_id: str, database: Database) -> None:
    found = _on_engine(database, lambda engine: ReferenceData(engine).authorisations(person_id))
    for category, year, active in found:
        click.echo(f"{year} {category} {'active' if active else 'revoked'}")


# -- import fee-records (in the `import` group of switch.cli.groups) ----------------------------
@click.command("fee-records")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--match/--no-match",
    default=True,
    show_default=True,
    help="Show the day-end match for the file's institution and date.",
)
@database_options
@operator_login("maker")
@keys_home_option
@component_files_option
@file_key_option
def import_fee_records(
    file: Path,
    match: bool,
    database: Database,
    operator: str,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """Import a hospital's fee-record FILE (MAC and totals checked, or nothing is stored)."""
    hsm, key = hsm_and_key(Home(keys_home, operator), component_files, file_key)
    data = file.read_bytes()

    async def store(office: BackOffice) -> list[str]:
        try:
            fees, stored = await import_fee_file(office.engine, hsm, key, data, _now_us())
        except MedicalFileError as error:
            raise click.ClickException(f"{file}: refused: {error}") from None
        lines = [
            f"{fees.institution_id} {fees.business_date}: {len(fees.records)} records, "
            f"{yuan(fees.amount_total_fen)}" + ("" if stored else " (already imported)")
        ]
        if match:
            found = fee_reviews(office.engine, fees.institution_id, fees.business_date)
            lines += [
                f"review {item.reason} {item.reference} {yuan(item.amount_fen)} {item.detail}"
                for item in found
            ]
        return lines

    for line in with_back_office(database, store, create=True):
        click.echo(line)

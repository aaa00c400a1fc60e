"""`medswitch import contributions|cardholders FILE` (added to the `import` group of
`switch.cli.medical`) and `medswitch ledger-files build-contributions|build-cardholders CSV`
(the counterparty's side, for the demo and tests). Formats: specs/ledger-files.md.

The database is the deployment's (`switch.cli.common`: SQLite or PostgreSQL); the HSM and the
counterparty's FILE key come from the key home and the custodians' component files, as for
`medswitch import fee-records`. A file that does not check is refused whole: nothing stored or
posted, exit code 1.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import click
from tqdm import tqdm  # type: ignore[import-untyped]

from hsm.errors import HsmError
from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.cardholder_import import import_cardholders
from ledger.ledger_files import (
    CardholderFile,
    CardholderImport,
    CardholderRecord,
    ContributionFile,
    ContributionImport,
    ContributionRecord,
    build_cardholders,
    build_contributions,
    import_contributions,
)
from ledger.medical import filemac
from ledger.medical.policy import Category
from ledger.medical.recordfile import MedicalFileError
from ledger.medical.split import yuan
from ledger.personal import PersonalDataError
from switch.cli.auth import key_login, operator_login
from switch.cli.common import (
    Database,
    check_database,
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
from switch.key_home import KeyNotFound, personal_keys
from switch.keystore_file import FileKeyStore

BUILDER_HINT = "Build one with `medswitch ledger-files {} CSV --out FILE` (specs/ledger-files.md)."


def _hsm_and_key(keys_home: Path, files: tuple[Path, ...], alias: str) -> tuple[Hsm, KeyRef]:
    """The HSM of the key home, used by a logged-in operator of any role once the deployment
    has operators (`switch.cli.auth.key_login`)."""
    return hsm_and_key(Home(keys_home, key_login(keys_home, None, None)), files, alias)


def _audit(url: str, operator: str, action: str, subject: str, **detail: object) -> None:
    """Who imported the file (after its import: the import itself is idempotent)."""
    from switch.estate.common import record

    with_engine(url, lambda engine: record(engine, operator, action, subject, **detail))


def _records(data: bytes) -> int:
    return max(data.count(b"\nD|"), 0)


@click.command("contributions", epilog=BUILDER_HINT.format("build-contributions"))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_options
@operator_login("maker")
@keys_home_option
@component_files_option
@file_key_option
def import_contributions_command(
    file: Path,
    database: Database,
    operator: str,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """Post a contributions FILE: each line split by the policy's age ratios into the personal
    fund and the pooled fund. MAC, totals and every line are checked first, or nothing posts;
    the same file again posts nothing."""
    data, url = file.read_bytes(), check_database(database)
    hsm, key = _hsm_and_key(keys_home, component_files, file_key)

    async def post(office: BackOffice) -> ContributionImport:
        ledger = await office.ledger()
        return await import_contributions(office.engine, ledger, hsm, key, data, bar.update)

    try:
        with tqdm(total=_records(data), unit="line", disable=None) as bar:
            done = with_back_office(url, post)
    except (MedicalFileError, HsmError) as error:
        raise click.ClickException(f"{file}: refused: {error}") from None
    _audit(url, operator, "import.contributions", done.file.file_id, posted=done.posted)
    click.echo(
        f"{file}: contributions {done.file.file_id} for {done.file.period}: "
        f"{len(done.file.records)} lines, {yuan(done.file.amount_total_fen)} — personal funds "
        f"{yuan(done.personal_fen)}, pooled fund {yuan(done.pooled_fen)}; "
        f"{done.posted} posted, {done.already_posted} already posted"
    )


@click.command("cardholders", epilog=BUILDER_HINT.format("build-cardholders"))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_options
@operator_login("maker")
@keys_home_option
@component_files_option
@file_key_option
def import_cardholders_command(
    file: Path,
    database: Database,
    operator: str,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """Register the cardholders of an encrypted cardholders FILE (new ones added, changed ones
    updated, never an ID number) and open their ledger accounts; checked whole first."""
    data, url = file.read_bytes(), check_database(database)
    hsm, key = _hsm_and_key(keys_home, component_files, file_key)

    async def register(office: BackOffice) -> CardholderImport:
        ledger = await office.ledger()
        personal = await personal_keys(hsm, FileKeyStore(keys_home / "keys.jsonl"))
        return await import_cardholders(
            office.engine, ledger, hsm, key, data, personal, bar.update
        )

    try:
        with tqdm(total=_records(data), unit="cardholder", disable=None) as bar:
            done = with_back_office(url, register)
    except KeyNotFound as error:
        raise click.ClickException(str(error)) from None
    except (MedicalFileError, HsmError, PersonalDataError) as error:
        raise click.ClickException(f"{file}: refused: {error}") from None
    _audit(url, operator, "import.cardholders", done.file.file_id,
           records=len(done.file.records))
    click.echo(
        f"{file}: cardholders {done.file.file_id}: {len(done.file.records)} records, "
        f"{done.added} added, {done.updated} updated, {done.unchanged} unchanged"
    )


# -- builders (the counterparty's side) ---------------------------------------------------------
@click.group("ledger-files")
def ledger_files() -> None:
    """Build contributions and cardholders files (specs/ledger-files.md) from CSV."""


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise click.ClickException(f"{path}: the header row is {','.join(columns)}")
        return list(reader)


@ledger_files.command("build-contributions")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--period", required=True, help="The contribution period, yyyy-mm.")
@click.option("--file-id", required=True, help="The file's id (1–32 of 0-9A-Za-z_.-).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@keys_home_option
@component_files_option
@file_key_option
def build_contributions_command(
    csv_file: Path,
    period: str,
    file_id: str,
    out: Path,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """A MACed contributions file from a CSV (header row unit_id,cardholder_id,amount_fen)."""
    try:
        records = tuple(
            ContributionRecord(row["unit_id"], row["cardholder_id"], int(row["amount_fen"]))
            for row in _csv_rows(csv_file, ("unit_id", "cardholder_id", "amount_fen"))
        )
        body = build_contributions(ContributionFile(file_id, period, records))
    except (ValueError, MedicalFileError) as error:
        raise click.ClickException(f"{csv_file}: {error}") from None
    hsm, key = _hsm_and_key(keys_home, component_files, file_key)
    out.write_bytes(asyncio.run(filemac.seal(hsm, key, body)))
    click.echo(f"{out}: contributions {file_id} for {period}, {len(records)} lines")


@ledger_files.command("build-cardholders")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--file-id", required=True, help="The file's id (1–32 of 0-9A-Za-z_.-).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@keys_home_option
@component_files_option
@file_key_option
def build_cardholders_command(
    csv_file: Path,
    file_id: str,
    out: Path,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str,
) -> None:
    """An encrypted, MACed cardholders file from a CSV with the header row
    cardholder_id,ssn,name,category,birth_date,unit_id (birth_date yyyy-mm-dd)."""
    columns = ("cardholder_id", "ssn", "name", "category", "birth_date", "unit_id")
    try:
        records = tuple(
            CardholderRecord(
                row["cardholder_id"],
                row["ssn"],
                row["name"],
                Category(row["category"]),
                dt.date.fromisoformat(row["birth_date"]),
                row["unit_id"],
            )
            for row in _csv_rows(csv_file, columns)
        )
    except ValueError as error:
        raise click.ClickException(f"{csv_file}: {error}") from None
    hsm, key = _hsm_and_key(keys_home, component_files, file_key)

    async def make() -> bytes:
        body = await build_cardholders(hsm, key, CardholderFile(file_id, records))
        return await filemac.seal(hsm, key, body)

    try:
        out.write_bytes(asyncio.run(make()))
    except MedicalFileError as error:
        raise click.ClickException(f"{csv_file}: {error}") from None
    click.echo(f"{out}: cardholders {file_id}, {len(records)} records (personal data encrypted)")

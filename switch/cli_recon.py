"""`medswitch dayend import-returns FILE` and `medswitch dayend import-statement FILE`: the bank's
return file 回盘 of a payout file and its daily statement, MAC-checked under the bank's file key
(``[dayend] file_key_alias``, ``bank/{bank}/FILE`` by default; the bank from the file's header),
matched and posted (ledger/dayend/recon_returns.py, recon_statement.py; formats in
specs/dayend-files.md). A file that does not check is refused whole (exit 1, nothing posted);
importing the same file again changes nothing. Returned payments and unmatched statement lines
go to the review queue (`medswitch review list`).
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from hsm.errors import HsmError
from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.core import Ledger
from ledger.dayend import bank_files as bf
from ledger.dayend.recon_returns import ReturnImport, import_returns
from ledger.dayend.recon_statement import StatementImport, import_statement
from ledger.medical.split import yuan
from ledger.medical.sql_store import sqlite_engine
from ledger.migrate import upgrade_sqlite
from ledger.sqlite_ledger import SqliteLedger
from switch import config as config_module
from switch.cli_keys import Home, load_hsm, resolve
from switch.cli_ledger import db_option
from switch.cli_medical import components_option, keys_home_option

T = TypeVar("T")
Importer = Callable[..., Awaitable[T]]


def _key_alias(data: bytes, file_key: str | None) -> str:
    if file_key is not None:
        return file_key
    bank = bf.header_bank(data)
    if bank is None:
        raise click.ClickException("not a return file or statement (header): nothing imported")
    try:
        pattern = config_module.load().dayend.file_key_alias
    except config_module.ConfigError as error:
        raise click.ClickException(str(error)) from None
    return pattern.format(bank=bank)


def _import(
    file: Path,
    db: Path,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    operator: str,
    importer: Importer[T],
) -> T:
    data = file.read_bytes()
    if not db.exists():
        raise click.ClickException(f"{db} does not exist (medswitch demo init, or ledger migrate)")
    alias = _key_alias(data, file_key)
    home = Home(keys_home, operator)
    hsm: Hsm = load_hsm(home, component_files, 2)
    upgrade_sqlite(db)
    engine = sqlite_engine(db)

    async def go() -> T:
        key: KeyRef = await resolve(home, alias)
        ledger: Ledger = SqliteLedger.open(db, migrate=False)
        try:
            return await importer(engine, ledger, hsm, key, data, operator, time.time_ns() // 1000)
        finally:
            await ledger.close()

    try:
        return asyncio.run(go())
    except (bf.BankFileError, HsmError) as error:
        raise click.ClickException(f"{file.name}: REFUSED: {error}") from None
    finally:
        engine.dispose()


def _options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
            db_option,
            keys_home_option,
            components_option,
            click.option("--file-key", default=None, help="ALIAS[:VERSION] (default: [dayend])."),
            click.option(
                "--operator",
                envvar="MEDSWITCH_OPERATOR",
                default=getpass.getuser,
                show_default="the login name",
                help="Who imports (recorded in the audit log).",
            ),
        ]
    ):
        function = option(function)
    return function


@click.command("import-returns")
@_options
def import_returns_command(
    file: Path,
    db: Path,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    operator: str,
) -> None:
    """Post a bank's return FILE for a released payout file: paid payments settle the fund bank
    account or the EP float, returned ones go back to the payable for the next payout and into
    review."""
    done: ReturnImport = _import(
        file, db, keys_home, component_files, file_key, operator, import_returns
    )
    r = done.file
    click.echo(
        f"{file.name}: OK bank {r.bank_id} answers {r.payout_file}: {len(r.lines)} payments, "
        f"{yuan(r.total_fen)} yuan — {done.paid} paid, {done.returned} returned now, "
        f"{done.already} already answered; {done.reissued} earlier returns re-issued"
    )
    for x in r.lines:
        if x.status == bf.RETURNED:
            click.echo(
                f"returned {x.payout_id} {x.payee_id} {yuan(x.amount_fen)} yuan: "
                f"{x.reason_code} {bf.REASONS[x.reason_code]} {x.reason}".rstrip()
            )


@click.command("import-statement")
@_options
def import_statement_command(
    file: Path,
    db: Path,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    operator: str,
) -> None:
    """Match and post a bank's daily statement FILE (contributions into the fund bank account,
    savings debits into the EP float, payouts out of them); unmatched lines go to review."""
    done: StatementImport = _import(
        file, db, keys_home, component_files, file_key, operator, import_statement
    )
    s = done.statement
    for x in done.lines:
        e = x.entry
        why = f": {x.why}" if x.why else ""
        click.echo(
            f"{e.line_ref:<20} {e.kind:<15} {e.direction} {yuan(e.amount_fen):>12} "
            f"{e.counterparty:<20} {x.status}{why}"
        )
    click.echo(
        f"{file.name}: OK bank {s.bank_id} {s.account} {s.statement_date}: {len(s.entries)} "
        f"lines — {done.count('matched')} matched, {done.count('review')} to review, "
        f"{done.count('already')} already imported"
    )

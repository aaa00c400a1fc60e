"""`medswitch dayend import-returns FILE` and `medswitch dayend import-statement FILE`: the bank's
return file 回盘 of a payout file and its daily statement, MAC-checked under the bank's file key
(``[dayend] file_key_alias``, ``bank/{bank}/FILE`` by default; the bank from the file's header),
matched and posted (ledger/dayend/recon_returns.py, recon_statement.py; formats in
specs/dayend-files.md). A file that does not check is refused whole (exit 1, nothing posted);
importing the same file again changes nothing. Returned payments and unmatched statement lines
go to the review queue (`medswitch review list`). The database is the deployment's, SQLite or
PostgreSQL (`switch.cli.common`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

import click

from hsm.errors import HsmError
from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger.dayend import bank_files as bf
from ledger.dayend import bank_statement as bs
from ledger.dayend import payout_file as pf
from ledger.dayend import return_file as rf
from ledger.dayend.calendar import CalendarError, Cutover
from ledger.dayend.recon_returns import ReturnImport, import_returns
from ledger.dayend.recon_statement import StatementImport, import_statement
from ledger.medical.split import yuan
from simulators.bank_files import (
    ReturnRule,
    StatementInput,
    issuer_savings_debits,
    return_file,
    statement_file,
)
from switch.cli.auth import operator_login
from switch.cli.common import (
    Database,
    check_database,
    component_files_option,
    database_options,
    home_option,
    hsm_and_key,
    keys_home_option,
    load_config,
    load_hsm,
    resolve,
    with_back_office,
)
from switch.key_home import Home

if TYPE_CHECKING:  # the database drivers load when a command runs, not for --help
    from switch.config import Config
    from switch.database import BackOffice

T = TypeVar("T")
Importer = Callable[..., Awaitable[T]]


def _key_alias(data: bytes, file_key: str | None, database: Database) -> str:
    if file_key is not None:
        return file_key
    bank = bf.header_bank(data)
    if bank is None:
        raise click.ClickException("not a return file or statement (header): nothing imported")
    return database.config().dayend.file_key_alias.format(bank=bank)


def _cutover(config: Config) -> Cutover:
    try:
        return Cutover.parse(config.dayend.cutover, config.dayend.timezone or config.timezone)
    except CalendarError as error:
        raise click.ClickException(f"[dayend] {error}") from None


def _import(
    file: Path,
    database: Database,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    operator: str,
    importer: Importer[T],
) -> T:
    data, url = file.read_bytes(), check_database(database)
    alias = _key_alias(data, file_key, database)
    cutover = _cutover(database.config())
    home = Home(keys_home, operator)
    hsm: Hsm = load_hsm(home, component_files, 2)

    async def go(office: BackOffice) -> T:
        key: KeyRef = await resolve(home, alias)
        ledger = await office.ledger()
        now_us = time.time_ns() // 1000
        return await importer(
            office.engine,
            ledger,
            hsm,
            key,
            data,
            operator,
            now_us,
            cutover=cutover,
            file_name=file.name,
        )

    try:
        return with_back_office(url, go)
    except (pf.PayoutFileError, HsmError) as error:  # BankFileError is one
        raise click.ClickException(f"{file.name}: REFUSED: {error}") from None


def _options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
            database_options,
            keys_home_option,
            component_files_option,
            click.option("--file-key", default=None, help="ALIAS[:VERSION] (default: [dayend])."),
            operator_login("maker"),
        ]
    ):
        function = option(function)
    return function


@click.command("import-returns")
@_options
def import_returns_command(
    file: Path,
    database: Database,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    operator: str,
) -> None:
    """Post a bank's return FILE for a released payout file: paid payments settle the fund bank
    account or the EP float, returned ones go back to the payable for the next payout and into
    review."""
    done: ReturnImport = _import(
        file, database, keys_home, component_files, file_key, operator, import_returns
    )
    r = done.file
    click.echo(
        f"{file.name}: OK bank {r.bank_id} answers {r.payout_file}: {len(r.lines)} payments, "
        f"{yuan(r.total_fen)} yuan — {done.paid} paid, {done.returned} returned now, "
        f"{done.already} already answered; {done.reissued} earlier returns re-issued"
        + (f"; {done.rematched} statement lines in review re-matched" if done.rematched else "")
    )
    if done.changed_nothing:
        click.echo(f"{file.name}: imported before: nothing changed")
    for x in r.lines:
        if x.status == rf.RETURNED and x.payout_id in done.answered_now:
            click.echo(
                f"returned {x.payout_id} {x.payee_id} {yuan(x.amount_fen)} yuan: "
                f"{x.reason_code} {rf.REASONS[x.reason_code]} {x.reason}".rstrip()
            )


@click.command("import-statement")
@_options
def import_statement_command(
    file: Path,
    database: Database,
    keys_home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    operator: str,
) -> None:
    """Match and post a bank's daily statement FILE (contributions into the fund bank account,
    savings debits into the EP float, payouts out of them); unmatched lines go to review."""
    done: StatementImport = _import(
        file, database, keys_home, component_files, file_key, operator, import_statement
    )
    s = done.statement
    for x in done.lines:
        e = x.entry
        why = f": {x.why}" if x.why else ""
        click.echo(
            f"{e.line_ref:<20} {e.kind:<15} {e.direction} {yuan(e.amount_fen):>12} "
            f"{e.counterparty:<20} {x.status}{why}"
        )
    conflicts = done.count("conflict")
    reused = f"{conflicts} reusing a reference for another line (to review), " if conflicts else ""
    click.echo(
        f"{file.name}: OK bank {s.bank_id} {s.account} {s.statement_date}: {len(s.entries)} "
        f"lines — {done.count('matched')} matched, {done.count('review')} to review, "
        f"{reused}{done.count('already')} already imported"
        + (f"; {done.rematched} earlier lines in review re-matched" if done.rematched else "")
    )
    if done.count("already") == len(s.entries) and not done.rematched:
        click.echo(f"{file.name}: imported before: nothing changed")


# -- medswitch sim bank-files: the bank's side -------------------------------------------------
def _sim_key(home: Path, component_files: tuple[Path, ...], alias: str) -> tuple[Hsm, KeyRef]:
    return hsm_and_key(Home(home, "bank-sim"), component_files, alias)


def _write(out: Path, name: str, data: bytes) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_bytes(data)
    return path


def _returned(values: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """ID[:CODE[:TEXT]] → {id: (code, text)}; the code defaults to R002."""
    found = {}
    for value in values:
        key, _, rest = value.partition(":")
        code, _, text = rest.partition(":")
        code = code or "R002"
        if code not in rf.REASONS:
            raise click.BadParameter(
                f"{code}: one of {', '.join(rf.REASONS)}", param_hint="--return"
            )
        found[key] = (code, text)
    return found


_sim_options = [
    home_option(help="Key home holding the file key."),
    component_files_option,
    click.option("--file-key", default=None, help="ALIAS (default: [dayend] bank/{bank}/FILE)."),
    click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="Directory to write the file into.",
    ),
]


def _with_sim_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_sim_options):
        function = option(function)
    return function


@click.group("bank-files")
def bank_files_sim() -> None:
    """The bank's day-end files: return files 回盘 for payout files, daily statements."""


@bank_files_sim.command("returns")
@click.argument("payout_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_with_sim_options
@click.option("--date", "return_date", required=True, help="The return file's date, yyyy-mm-dd.")
@click.option(
    "--return",
    "returned",
    multiple=True,
    help="Return a payment: PAYOUT_ID or PAYEE_ID[:CODE[:TEXT]] (repeat); CODE R002 "
    "(account number wrong) by default.",
)
@click.option("--return-above", type=int, default=None, help="Return every payment above FEN.")
def sim_returns(
    payout_file: Path,
    home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    out: Path,
    return_date: str,
    returned: tuple[str, ...],
    return_above: int | None,
) -> None:
    """Answer a released PAYOUT_FILE: every payment paid, except those returned by rule."""
    data = payout_file.read_bytes()
    bank = pf.header_bank(data) or payout_file.name.split("_")[2]
    hsm, key = _sim_key(home, component_files, file_key or _alias(bank))
    rule = ReturnRule(_returned(returned), return_above)
    try:
        name, sealed = asyncio.run(return_file(hsm, key, data, return_date, rule))
    except (pf.PayoutFileError, HsmError) as error:
        raise click.ClickException(f"{payout_file.name}: REFUSED by the bank: {error}") from None
    path = _write(out, name, sealed)
    answer, _, _ = rf.split_return(sealed)
    back = [x for x in answer.lines if x.status == rf.RETURNED]
    click.echo(f"{path}: {len(answer.lines)} payments, {len(back)} returned")


def _alias(bank: str) -> str:
    return load_config().dayend.file_key_alias.format(bank=bank)


def _unit_amounts(values: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    found = []
    for value in values:
        unit, _, fen = value.partition("=")
        if not unit or not fen.isdigit() or int(fen) <= 0:
            raise click.BadParameter(f"{value!r}: UNIT=FEN", param_hint="--contribution")
        found.append((unit, int(fen)))
    return tuple(found)


@bank_files_sim.command("statement")
@_with_sim_options
@click.option("--bank", "bank_id", required=True, help="The bank's id (b1, b2…).")
@click.option("--date", "statement_date", required=True, help="yyyy-mm-dd.")
@click.option("--account", type=click.Choice([bs.FUND, bs.EP_FLOAT]), required=True)
@click.option("--contribution", multiple=True, help="UNIT=FEN received (FUND; repeat).")
@click.option("--savings-debits", type=int, default=0, help="The day's savings debits (EPFLOAT).")
@click.option(
    "--issuer-log",
    type=click.File("r"),
    default=None,
    help="Savings debits from `sim bank issuer`'s JSON lines instead.",
)
@click.option(
    "--paid-from",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A return file whose paid payments left the account (repeat).",
)
@click.option("--other", multiple=True, help="PARTY=FEN[:D] an item the centre cannot expect.")
def sim_statement(
    home: Path,
    component_files: tuple[Path, ...],
    file_key: str | None,
    out: Path,
    bank_id: str,
    statement_date: str,
    account: str,
    contribution: tuple[str, ...],
    savings_debits: int,
    issuer_log: TextIO | None,
    paid_from: tuple[Path, ...],
    other: tuple[str, ...],
) -> None:
    """The day's statement of the centre's FUND or EPFLOAT account at the bank."""
    hsm, key = _sim_key(home, component_files, file_key or _alias(bank_id))
    if issuer_log is not None:
        savings_debits = issuer_savings_debits(issuer_log)
    try:
        paid = tuple(asyncio.run(rf.parse_return(hsm, key, p.read_bytes())) for p in paid_from)
    except (bf.BankFileError, HsmError) as error:
        raise click.ClickException(f"--paid-from: {error}") from None
    others = []
    for value in other:
        party, _, rest = value.partition("=")
        fen, _, direction = rest.partition(":")
        if not fen.isdigit() or direction not in ("", bs.CREDIT, bs.DEBIT):
            raise click.BadParameter(f"{value!r}: PARTY=FEN[:C|D]", param_hint="--other")
        others.append((party, int(fen), direction or bs.CREDIT))
    given = StatementInput(
        bank_id,
        statement_date,
        account,
        _unit_amounts(contribution),
        savings_debits,
        paid,
        tuple(others),
    )
    try:
        name, sealed = asyncio.run(statement_file(hsm, key, given))
    except (bf.BankFileError, HsmError) as error:
        raise click.ClickException(str(error)) from None
    path = _write(out, name, sealed)
    statement, _, _ = bs.split_statement(sealed)
    click.echo(
        f"{path}: {len(statement.entries)} lines, credits {yuan(statement.total_fen(bs.CREDIT))}"
        f" yuan, debits {yuan(statement.total_fen(bs.DEBIT))} yuan"
    )

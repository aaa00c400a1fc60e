"""`medswitch dayend run|approve|reject|status|verify`: the business date's clearing and its
payouts under maker-checker (ledger.dayend; formats in specs/dayend-files.md).

By hand: ``medswitch dayend run --date 2026-11-25 --operator alice -c a.component -c b.component``
(the maker: clearing report, staged payout and refund files, an approval request; nothing posts),
then ``medswitch dayend approve --date 2026-11-25 --operator bob`` (a different operator: the
payouts post and the files go to the outbox). From cron, a few minutes after the cut-over, while
the daemon keeps serving (day-end reads only what posted before the cut-over instant)::

    5 23 * * *  medswitch dayend run --date "$(date +\\%F)" --operator cron -c A -c B

(a cut-over before noon closes the previous day: pass yesterday's date). Settings: ``[dayend]``
in the configuration (cut-over, time zone, output directory, bank file key alias); the database
is the deployment's, SQLite or PostgreSQL (`switch.cli.common`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm  # type: ignore[import-untyped]

from hsm.errors import HsmError
from hsm.keys import KeyRef
from ledger.dayend import payout_file as pf
from ledger.dayend import run as dayend
from ledger.dayend import store
from ledger.dayend.calendar import CalendarError, Cutover, parse_date
from ledger.medical.split import yuan
from ledger.personal import PersonalDataError, PersonalKeys
from switch import config as config_module
from switch.cli.auth import key_login, logged_in, operator_login
from switch.cli.common import (
    Database,
    check_database,
    component_files_option,
    database_options,
    keys_home_option,
    load_config,
    load_hsm,
    resolve,
    with_back_office,
    with_engine,
)
from switch.key_home import Home, KeyNotFound, personal_keys

if TYPE_CHECKING:  # the database drivers load when a command runs, not for --help
    from switch.database import BackOffice

STEPS = ("snapshot", "clearing", "files", "store")


def _cutover(config: config_module.Config) -> Cutover:
    try:
        return Cutover.parse(config.dayend.cutover, config.dayend.timezone or config.timezone)
    except CalendarError as error:
        raise click.ClickException(f"[dayend] {error}") from None


def _out(config: config_module.Config, out: Path | None) -> Path:
    if out is not None:
        return out
    return Path(config.dayend.out_dir) if config.dayend.out_dir else config.home_path / "dayend"


def _date(text: str) -> str:
    try:
        return parse_date(text).isoformat()
    except CalendarError as error:
        raise click.BadParameter(str(error)) from None


def _now_us(text: str | None, cutover: Cutover) -> int:
    if text is None:
        return time.time_ns() // 1000
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        message = f"{text!r} is not an ISO date and time"
        raise click.BadParameter(message, param_hint="--now") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=cutover.zone)
    return int(moment.timestamp() * 1_000_000)


date_option = click.option("--date", "date", required=True, help="Business date, yyyy-mm-dd.")
out_option = click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                          default=None, help="Output directory (default: [dayend] out_dir, "
                          "else $MEDSWITCH_HOME/dayend).")


@click.command("run")
@date_option
@database_options
@keys_home_option
@component_files_option
@out_option
@operator_login("maker")
@click.option("--now", "now_text", default=None, hidden=True,
              help="The clock's time, ISO (drills and tests only); default: now.")
def run_command(date: str, database: Database, keys_home: Path,
                component_files: tuple[Path, ...], out: Path | None, operator: str,
                now_text: str | None) -> None:
    """Clear business DATE and prepare its payouts (the maker). Posts nothing; run it again and
    it writes the same bytes."""
    config, date = database.config(), _date(date)
    cutover, url = _cutover(config), check_database(database)
    home = Home(keys_home, operator)
    hsm = load_hsm(home, component_files, 2)
    pattern = config.dayend.file_key_alias

    async def key_for(bank: str) -> KeyRef:
        alias = pattern.format(bank=bank)
        try:
            return await resolve(home, alias)
        except click.ClickException:
            raise dayend.DayendError(
                f"no file key {alias} for bank {bank}: exchange one under the bank's ZMK "
                f"(medswitch keys import/generate {alias} --usage FILE)") from None

    bar = tqdm(total=len(STEPS), unit="step", disable=None, file=sys.stderr)

    def progress(step: str) -> None:
        bar.set_postfix_str(step)
        bar.update()

    async def clear(office: BackOffice) -> dayend.RunResult:
        try:  # refunds name cardholders: their names are sealed under these
            personal: PersonalKeys | None = await personal_keys(hsm, home.store)
        except KeyNotFound:
            personal = None  # a day with refunds then says what is missing
        return await dayend.run(
            office.engine, hsm, key_for, date, cutover, _out(config, out), operator,
            _now_us(now_text, cutover), settle_s=config.dayend.settle_s, progress=progress,
            personal=personal)

    try:
        result = with_back_office(url, clear)
    except (dayend.DayendError, pf.PayoutFileError, HsmError, PersonalDataError) as error:
        raise click.ClickException(str(error)) from None
    finally:
        bar.close()
    for line in result.summary:
        click.echo(line)
    click.echo(f"report {result.report}")
    for path in result.files:
        click.echo(f"staged {path}")
    state = {"prepared": f"prepared: awaiting approval by an operator other than {operator}",
             "closed": "closed: nothing to pay",
             "unchanged": "unchanged: identical to the stored run; nothing stored or posted"}
    click.echo(f"{date} {state[result.status]}")
    timings = " ".join(f"{k} {v:.2f}s" for k, v in result.timings_s.items())
    click.echo(f"timing: {timings} total {sum(result.timings_s.values()):.2f}s")


@click.command("approve")
@date_option
@database_options
@out_option
@operator_login("checker")
def approve_command(date: str, database: Database, out: Path | None, operator: str) -> None:
    """Approve DATE's prepared payouts (the checker, not the maker): post them and release the
    files to the outbox."""
    config, date = database.config(), _date(date)

    async def go(office: BackOffice) -> dayend.ApproveResult:
        return await dayend.approve(office.engine, await office.ledger(), date, operator,
                                    _out(config, out), time.time_ns() // 1000)

    try:
        result = with_back_office(database, go)
    except dayend.DayendError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{date} approved by {operator} (prepared by {result.made_by}): "
               f"{result.posted} payouts posted, {result.already} already posted"
               + (f", {result.reissued} returned payouts re-issued" if result.reissued else ""))
    for path in result.released:
        click.echo(f"released {path}")


@click.command("reject")
@date_option
@database_options
@operator_login("checker")
@click.option("--reason", required=True, help="Why (recorded).")
def reject_command(date: str, database: Database, operator: str, reason: str) -> None:
    """Reject DATE's prepared payouts: nothing posts or is released; run day-end again."""
    date = _date(date)
    try:
        maker = with_engine(database, lambda engine: dayend.reject(
            engine, date, operator, reason, time.time_ns() // 1000))
    except dayend.DayendError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{date} rejected by {operator} (prepared by {maker}): nothing posted")


@click.command("status")
@date_option
@database_options
@logged_in
def status_command(date: str, database: Database) -> None:
    """DATE's day-end: status, who ran and approved it, its files and payouts."""
    date = _date(date)

    def read(engine: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        day = store.day(engine, date)
        if day is None:
            raise click.ClickException(f"no day-end run for {date}")
        return day, store.files_of(engine, date), store.payouts_of(engine, date)

    day, files, payouts = with_engine(database, read)
    approved = f", approved by {day['approved_by']}" if day["approved_by"] else ""
    click.echo(f"{date} {day['status']}: run by {day['run_by']} ({day['runs']} runs){approved}")
    click.echo(f"report {day['report_name']} sha256 {day['report_sha256']}")
    for f in files:
        click.echo(f"file {f['name']} {f['status']} {f['record_count']} payments "
                   f"{yuan(f['total_fen'])} yuan MAC {f['mac']}")
    by_status: dict[str, int] = {}
    for p in payouts:
        by_status[p["status"]] = by_status.get(p["status"], 0) + 1
    click.echo("payouts " + (" ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
                             or "none"))


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@keys_home_option
@component_files_option
@click.option("--bank", default=None, help="The bank (default: from the file's header or name).")
@click.option("--file-key", default=None, help="ALIAS[:VERSION] (default: [dayend] alias).")
def verify_command(file: Path, keys_home: Path, component_files: tuple[Path, ...],
                   bank: str | None, file_key: str | None) -> None:
    """Check a payout or refund FILE: layout, trailer count and total, MAC (exit 1 if not)."""
    data = file.read_bytes()
    bank = bank or pf.header_bank(data) or _bank_from_name(file.name)
    if bank is None and file_key is None:
        raise click.ClickException("cannot tell the bank: pass --bank or --file-key")
    alias = file_key or load_config().dayend.file_key_alias.format(bank=bank)
    home = Home(keys_home, key_login(keys_home, None, None))  # any operator checks a file
    hsm = load_hsm(home, component_files, 2)

    async def check() -> pf.CheckedFile:
        return await pf.parse(hsm, await resolve(home, alias), data)

    try:
        checked = asyncio.run(check())
    except (pf.PayoutFileError, HsmError) as error:
        raise click.ClickException(f"{file.name}: REFUSED: {error}") from None
    f = checked.file
    click.echo(f"{file.name}: OK {f.kind} {f.business_date} bank {f.bank_id} source {f.source}: "
               f"{len(f.lines)} payments, {yuan(f.total_fen)} yuan, MAC {checked.mac}")


def _bank_from_name(name: str) -> str | None:
    parts = name.split("_")
    return parts[2] if len(parts) == 4 and parts[0] in pf.FORMATS else None

"""`medswitch dayend run|approve|reject|status|verify`: the business date's clearing and its
payouts under maker-checker (ledger.dayend; formats in specs/dayend-files.md).

By hand: ``medswitch dayend run --date 2026-11-25 --operator alice -c a.component -c b.component``
(the maker: clearing report, staged payout and refund files, an approval request; nothing posts),
then ``medswitch dayend approve --date 2026-11-25 --operator bob`` (a different operator: the
payouts post and the files go to the outbox). From cron, a few minutes after the cut-over, while
the daemon keeps serving (day-end reads only what posted before the cut-over instant)::

    5 23 * * *  medswitch dayend run --date "$(date +\\%F)" --operator cron -c A -c B

(a cut-over before noon closes the previous day: pass yesterday's date). Settings: ``[dayend]``
in the configuration (cut-over, time zone, output directory, bank file key alias).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import sys
import time
from pathlib import Path

import click
from sqlalchemy.engine import Engine
from tqdm import tqdm  # type: ignore[import-untyped]

from hsm.errors import HsmError
from hsm.keys import KeyRef
from ledger.dayend import payout_file as pf
from ledger.dayend import run as dayend
from ledger.dayend import store
from ledger.dayend.calendar import CalendarError, Cutover, parse_date
from ledger.medical.sql_store import sqlite_engine
from ledger.migrate import upgrade_sqlite
from ledger.personal import PersonalDataError, PersonalKeys
from ledger.sqlite_ledger import SqliteLedger
from switch import config as config_module
from switch.cli.keys import load_hsm, resolve
from switch.cli.ledger import db_option
from switch.cli.medical import components_option, keys_home_option
from switch.key_home import Home, KeyNotFound, personal_keys

STEPS = ("snapshot", "clearing", "files", "store")


@click.group("dayend")
def dayend_group() -> None:
    """Day-end: cut-over, clearing, payouts approved by a second operator, payout files."""


def _config() -> config_module.Config:
    try:
        return config_module.load()
    except config_module.ConfigError as error:
        raise click.ClickException(str(error)) from None


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


def _engine(db: Path) -> Engine:
    if not db.exists():
        raise click.ClickException(f"{db} does not exist (medswitch demo init, or ledger migrate)")
    upgrade_sqlite(db)  # the day-end tables on a database made before them
    return sqlite_engine(db)


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
operator_option = click.option("--operator", envvar="MEDSWITCH_OPERATOR", required=True,
                               help="Who does this (recorded; maker and checker must differ).")


@dayend_group.command("run")
@date_option
@db_option
@keys_home_option
@components_option
@out_option
@click.option("--operator", envvar="MEDSWITCH_OPERATOR", default=getpass.getuser,
              show_default="the login name", help="The maker (recorded in the approval).")
@click.option("--now", "now_text", default=None, hidden=True,
              help="The clock's time, ISO (drills and tests only); default: now.")
def run_command(date: str, db: Path, keys_home: Path, component_files: tuple[Path, ...],
                out: Path | None, operator: str, now_text: str | None) -> None:
    """Clear business DATE and prepare its payouts (the maker). Posts nothing; run it again and
    it writes the same bytes."""
    config, date = _config(), _date(date)
    cutover, engine = _cutover(config), _engine(db)
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

    async def go() -> dayend.RunResult:
        try:  # refunds name cardholders: their names are sealed under these
            personal: PersonalKeys | None = await personal_keys(hsm, home.store)
        except KeyNotFound:
            personal = None  # a day with refunds then says what is missing
        return await dayend.run(
            engine, hsm, key_for, date, cutover, _out(config, out), operator,
            _now_us(now_text, cutover), settle_s=config.dayend.settle_s, progress=progress,
            personal=personal)

    try:
        result = asyncio.run(go())
    except (dayend.DayendError, pf.PayoutFileError, HsmError, PersonalDataError) as error:
        raise click.ClickException(str(error)) from None
    finally:
        bar.close()
        engine.dispose()
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


@dayend_group.command("approve")
@date_option
@db_option
@out_option
@operator_option
def approve_command(date: str, db: Path, out: Path | None, operator: str) -> None:
    """Approve DATE's prepared payouts (the checker, not the maker): post them and release the
    files to the outbox."""
    config, date = _config(), _date(date)
    engine = _engine(db)

    async def go() -> dayend.ApproveResult:
        ledger = SqliteLedger.open(db)
        try:
            return await dayend.approve(engine, ledger, date, operator, _out(config, out),
                                        time.time_ns() // 1000)
        finally:
            await ledger.close()

    try:
        result = asyncio.run(go())
    except dayend.DayendError as error:
        raise click.ClickException(str(error)) from None
    finally:
        engine.dispose()
    click.echo(f"{date} approved by {operator} (prepared by {result.made_by}): "
               f"{result.posted} payouts posted, {result.already} already posted")
    for path in result.released:
        click.echo(f"released {path}")


@dayend_group.command("reject")
@date_option
@db_option
@operator_option
@click.option("--reason", required=True, help="Why (recorded).")
def reject_command(date: str, db: Path, operator: str, reason: str) -> None:
    """Reject DATE's prepared payouts: nothing posts or is released; run day-end again."""
    date, engine = _date(date), _engine(db)
    try:
        maker = dayend.reject(engine, date, operator, reason, time.time_ns() // 1000)
    except dayend.DayendError as error:
        raise click.ClickException(str(error)) from None
    finally:
        engine.dispose()
    click.echo(f"{date} rejected by {operator} (prepared by {maker}): nothing posted")


@dayend_group.command("status")
@date_option
@db_option
def status_command(date: str, db: Path) -> None:
    """DATE's day-end: status, who ran and approved it, its files and payouts."""
    date, engine = _date(date), _engine(db)
    try:
        day = store.day(engine, date)
        if day is None:
            raise click.ClickException(f"no day-end run for {date}")
        files, payouts = store.files_of(engine, date), store.payouts_of(engine, date)
    finally:
        engine.dispose()
    approved = f", approved by {day['approved_by']}" if day["approved_by"] else ""
    click.echo(f"{date} {day['status']}: run by {day['run_by']} ({day['runs']} runs){approved}")
    click.echo(f"report {day['report_name']} sha256 {day['report_sha256']}")
    for f in files:
        click.echo(f"file {f['name']} {f['status']} {f['record_count']} payments "
                   f"{f['total_fen']} fen MAC {f['mac']}")
    by_status: dict[str, int] = {}
    for p in payouts:
        by_status[p["status"]] = by_status.get(p["status"], 0) + 1
    click.echo("payouts " + (" ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
                             or "none"))


@dayend_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@keys_home_option
@components_option
@click.option("--bank", default=None, help="The bank (default: from the file's header or name).")
@click.option("--file-key", default=None, help="ALIAS[:VERSION] (default: [dayend] alias).")
def verify_command(file: Path, keys_home: Path, component_files: tuple[Path, ...],
                   bank: str | None, file_key: str | None) -> None:
    """Check a payout or refund FILE: layout, trailer count and total, MAC (exit 1 if not)."""
    data = file.read_bytes()
    bank = bank or pf.header_bank(data) or _bank_from_name(file.name)
    if bank is None and file_key is None:
        raise click.ClickException("cannot tell the bank: pass --bank or --file-key")
    alias = file_key or _config().dayend.file_key_alias.format(bank=bank)
    home = Home(keys_home, getpass.getuser())
    hsm = load_hsm(home, component_files, 2)

    async def check() -> pf.CheckedFile:
        return await pf.parse(hsm, await resolve(home, alias), data)

    try:
        checked = asyncio.run(check())
    except (pf.PayoutFileError, HsmError) as error:
        raise click.ClickException(f"{file.name}: REFUSED: {error}") from None
    f = checked.file
    click.echo(f"{file.name}: OK {f.kind} {f.business_date} bank {f.bank_id} source {f.source}: "
               f"{len(f.lines)} payments, {f.total_fen} fen, MAC {checked.mac}")


def _bank_from_name(name: str) -> str | None:
    parts = name.split("_")
    return parts[2] if len(parts) == 4 and parts[0] in pf.FORMATS else None

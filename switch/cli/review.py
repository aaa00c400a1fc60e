"""`medswitch review ...`: the operators' review queue (ledger/dayend/review_queue.py).

    medswitch review list [--status open] [--reason R]
    medswitch review show KEY
    medswitch review accept KEY --operator alice --note "posted as the card says"
    medswitch review reject KEY --operator alice --note "forged record"
    medswitch review adjust KEY --debit A --credit B --amount 12.34 --operator alice --note …
    medswitch review approve-adjustment ID --operator bob      (a different operator)
    medswitch review decline-adjustment ID --operator bob --note …
    medswitch review sweep [--now 2026-11-25T18:00:00+08:00] [--age 24h]    (a maker)

Every command runs as a logged-in operator (`switch.cli.auth`): list and show by any role,
accept, reject, adjust and sweep by a maker, approvals by a checker. KEY is an item's number as
`review list` shows it (``#1`` or ``1``), its key or a unique prefix of it (6+ hex digits).
Amounts are shown in yuan; card numbers are masked. Every action is appended to the audit log
with the operator and the time; a refused action changes nothing and exits non-zero with the
reason. The database is the deployment's, SQLite or PostgreSQL (`switch.cli.common`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, TypeVar

import click

from ledger.core import TransferResult
from ledger.dayend import recon_adjustments as adjustments
from ledger.dayend import recon_doubt
from ledger.dayend.recon_adjustments import Adjustment
from ledger.dayend.recon_doubt import SweepResult
from ledger.dayend.review_queue import QueuedItem, ReviewError, ReviewQueue, Status
from ledger.medical.split import yuan
from messages.pretty import mask_pan
from switch.cli.auth import logged_in, operator_login
from switch.cli.common import Database, database_options, with_back_office, with_engine
from switch.cli.human import human_duration, human_time

if TYPE_CHECKING:  # the database drivers load when a command runs, not for --help
    from switch.database import BackOffice

T = TypeVar("T")
_DIGITS = re.compile(r"\d{13,19}")
_AGE = re.compile(r"(\d+)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def mask_text(text: str) -> str:
    """Card numbers (13–19 digits passing Luhn) masked to first 6 and last 4.

    >>> mask_text("debit 6212340000000019 at h1, serial 3100000000000001")
    'debit 621234******0019 at h1, serial 3100000000000001'
    """
    return _DIGITS.sub(lambda m: mask_pan(m[0]) if _luhn_ok(m[0]) else m[0], text)


def now_us() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)


def fen_of(text: str) -> int:
    """Yuan with at most two decimals, as fen."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount in yuan") from None
    fen = value * 100
    if fen != fen.to_integral_value() or fen <= 0:
        raise click.BadParameter(f"{text!r}: a positive amount in yuan with at most 2 decimals")
    return int(fen)


def _on_queue(database: Database, use: Callable[[ReviewQueue], T]) -> T:
    """``use`` on the review queue of the deployment's database; a refusal in one line."""
    try:
        return with_engine(database, lambda engine: use(ReviewQueue(engine)))
    except ReviewError as error:
        raise _refused(error) from None


def _refused(error: ReviewError) -> click.ClickException:
    return click.ClickException(f"refused: {error}")


note_option = click.option("--note", default="", help="Why (recorded in the audit log).")


@click.group("review")
def review_group() -> None:
    """The review queue: exceptions held for a person, with maker-checker adjustments."""


@review_group.command("list")
@click.option("--status", default=None, type=click.Choice([x.value for x in Status]))
@click.option("--reason", default=None, help="Only items with this reason.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 100_000))
@database_options
@logged_in
def list_items(status: str | None, reason: str | None, limit: int, database: Database) -> None:
    """A table of review items, oldest first."""
    items = _on_queue(database, lambda queue: queue.items(status, reason, limit))
    click.echo(f"{'#':>6}  {'key':<12} {'status':<10} {'reason':<26} {'yuan':>12}  reference")
    for item in items:
        click.echo(
            f"{'#' + str(item.seq):>6}  {item.key[:12]:<12} {item.status:<10} "
            f"{item.reason[:26]:<26} "
            f"{yuan(item.amount_fen):>12}  {mask_text(item.reference)[:80]}"
        )
    click.echo(f"{len(items)} item(s)")


def _echo_item(item: QueuedItem) -> None:
    click.echo(f"item #{item.seq} {item.key}")
    click.echo(f"  reason     {item.reason}")
    click.echo(f"  status     {item.status}")
    click.echo(f"  amount     {yuan(item.amount_fen)} yuan")
    click.echo(f"  reference  {mask_text(item.reference)}")
    click.echo(f"  detail     {mask_text(item.detail)}")
    click.echo(f"  created    {human_time(item.created_at_us)}")
    if item.resolved_by:
        click.echo(f"  resolved   {human_time(item.resolved_at_us)} by {item.resolved_by}")


@review_group.command("show")
@click.argument("key")
@database_options
@logged_in
def show(key: str, database: Database) -> None:
    """One item, its adjustments and its audit trail."""

    def echo(queue: ReviewQueue) -> None:
        item = queue.find(key)
        _echo_item(item)
        for adj in adjustments.pending_adjustments(queue, item.key):
            a = adj.adjustment
            click.echo(
                f"  adjustment {adj.approval_id} [{adj.status}] {a.debit_account} -> "
                f"{a.credit_account} {yuan(a.amount_fen)} yuan, made by {adj.made_by}"
                + (f", decided by {adj.approved_by}" if adj.approved_by else "")
                + (f": {adj.reason}" if adj.reason else "")
            )
        for entry in queue.trail(item.key):
            click.echo(
                f"  audit {human_time(entry.at_us)} {entry.actor:<12} {entry.action:<28} "
                f"{entry.detail}"
            )

    _on_queue(database, echo)


@review_group.command("accept")
@click.argument("key")
@note_option
@database_options
@operator_login("maker")
def accept(key: str, operator: str, note: str, database: Database) -> None:
    """The item stands as posted: close it."""
    item = _on_queue(database, lambda queue: queue.accept(key, operator, note, now_us()))
    click.echo(f"#{item.seq} {item.key[:12]} accepted by {operator}")


@review_group.command("reject")
@click.argument("key")
@note_option
@database_options
@operator_login("maker")
def reject(key: str, operator: str, note: str, database: Database) -> None:
    """The item is judged wrong (nothing to post): close it."""
    item = _on_queue(database, lambda queue: queue.reject(key, operator, note, now_us()))
    click.echo(f"#{item.seq} {item.key[:12]} rejected by {operator}")


@review_group.command("adjust")
@click.argument("key")
@click.option("--debit", required=True, help="The account debited (e.g. payins:h1).")
@click.option("--credit", required=True, help="The account credited (e.g. pool:centre).")
@click.option("--amount", required=True, help="Yuan, e.g. 12.34.")
@note_option
@database_options
@operator_login("maker")
def adjust(
    key: str, debit: str, credit: str, amount: str, operator: str, note: str, database: Database
) -> None:
    """Propose a correcting transfer (an allowed pair only); a second operator approves it."""
    adjustment = Adjustment(debit, credit, fen_of(amount), note)
    pending = _on_queue(
        database, lambda queue: adjustments.propose(queue, key, adjustment, operator, now_us())
    )
    click.echo(
        f"adjustment {pending.approval_id} pending: {debit} -> {credit} "
        f"{yuan(adjustment.amount_fen)} yuan, made by {operator}; "
        f"another operator approves with: medswitch review approve-adjustment "
        f"{pending.approval_id}"
    )


@review_group.command("approve-adjustment")
@click.argument("approval_id", type=int)
@database_options
@operator_login("checker")
def approve_adjustment(approval_id: int, operator: str, database: Database) -> None:
    """Post a pending adjustment (the operator must differ from its maker)."""

    async def post(office: BackOffice) -> TransferResult:
        queue, ledger = ReviewQueue(office.engine), await office.ledger()
        return await adjustments.approve(queue, ledger, approval_id, operator, now_us())

    try:
        result = with_back_office(database, post)
    except ReviewError as error:
        raise _refused(error) from None
    click.echo(f"adjustment {approval_id} approved by {operator}: {result.name}")


@review_group.command("decline-adjustment")
@click.argument("approval_id", type=int)
@note_option
@database_options
@operator_login("checker")
def decline_adjustment(approval_id: int, operator: str, note: str, database: Database) -> None:
    """Decline a pending adjustment: the item is open again."""
    _on_queue(
        database, lambda queue: adjustments.decline(queue, approval_id, operator, note, now_us())
    )
    click.echo(f"adjustment {approval_id} declined by {operator}")


def parse_age(text: str) -> int:
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r}: an age like 90s, 30m, 24h or 2d")
    return int(match[1]) * _UNIT_S[match[2]]


def parse_now(text: str | None) -> int:
    if text is None:
        return now_us()
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date-time") from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{text!r}: give the time zone (Z or +08:00)")
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


@review_group.command("sweep")
@click.option("--now", "now_text", default=None, help="ISO date-time with zone (default: now).")
@click.option(
    "--age",
    "age_text",
    default="24h",
    show_default=True,
    envvar="MEDSWITCH_REVIEW_DOUBT_AGE",
    help="Loads in doubt at least this old go to review (env MEDSWITCH_REVIEW_DOUBT_AGE).",
)
@database_options
@operator_login("maker")
def sweep(now_text: str | None, age_text: str, operator: str, database: Database) -> None:
    """Put loads and unloads still in doubt past their age into review (once each); the
    audit log records who swept, when, for what age and what it added."""
    from switch.estate.common import record

    age_s, at_us = parse_age(age_text), parse_now(now_text)

    async def swept(office: BackOffice) -> SweepResult:
        done = await recon_doubt.sweep(office.engine, await office.ledger(), at_us, age_s)
        record(office.engine, operator, "review.sweep", "loads-in-doubt", age_s=age_s,
               as_of_us=at_us, in_doubt=len(done.aged), added=done.added)
        return done

    done = with_back_office(database, swept)
    for aged in done.aged:
        attempt = aged.attempt
        click.echo(
            f"{'unload' if attempt.unload else 'load':<6} {attempt.purse.value} "
            f"{attempt.application_serial} counter {attempt.online_counter} "
            f"{yuan(attempt.amount_fen):>10} yuan  in doubt {human_duration(aged.age_s)}"
        )
    click.echo(
        f"{len(done.aged)} in doubt for {human_duration(age_s)} or more; "
        f"{done.added} new review item(s); swept by {operator}"
    )

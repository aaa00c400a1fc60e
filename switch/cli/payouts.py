"""`medswitch dayend settlement-account` and `medswitch dayend confirm-reissue`: what lets a
returned payout be paid again (ledger.dayend.returned_hold; specs/dayend-files.md, *Re-issue
after a return*). Day-end holds a returned payout's payable while the payee's account is the one
the bank returned it from; correcting the account (or confirming the same one) lets the next
day-end re-issue it. Kept apart from `dayend.py` so a general `institutions` group can take
`settlement-account` over as it is."""

from __future__ import annotations

import time

import click

from ledger.dayend.returned_hold import HoldError, confirm_reissue, set_settlement_account
from switch.cli.auth import operator_login
from switch.cli.common import Database, database_options, with_engine


@click.command("settlement-account")
@click.argument("institution")
@click.option("--bank", required=True, help="The settlement bank (an institution of kind bank).")
@click.option("--account", "account_no", required=True, help="The settlement account number.")
@database_options
@operator_login("maker")
def settlement_account_command(institution: str, bank: str, account_no: str,
                               database: Database, operator: str) -> None:
    """Set or correct an INSTITUTION's settlement bank and account; its returned payouts are
    re-issued to it by the next day-end.

    Audited. Giving the very account a payout was returned from confirms it may be paid
    again."""
    try:
        reissue = with_engine(database, lambda engine: set_settlement_account(
            engine, institution, bank, account_no, operator, time.time_ns() // 1000))
    except HoldError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{institution}: settlement account {bank} {account_no}")
    for payout_id in reissue:
        click.echo(f"returned payout {payout_id}: re-issued by the next day-end to this account")


@click.command("confirm-reissue")
@click.argument("payout_id")
@database_options
@operator_login("maker")
def confirm_reissue_command(payout_id: str, database: Database, operator: str) -> None:
    """Confirm that a returned PAYOUT_ID may be paid again to the same account: the next
    day-end re-issues it.

    For when the bank's reason has gone (e.g. the account was unfrozen). Audited."""
    try:
        said = with_engine(database, lambda engine: confirm_reissue(
            engine, payout_id, operator, time.time_ns() // 1000))
    except HoldError as error:
        raise click.ClickException(str(error)) from None
    click.echo(said)

"""`medswitch ledger ...` (balances, history, review items, migrations) and `medswitch demo init`
(a demo deployment), on the deployment's database: the configured one, the SQLite file `--db`
or `--database URL` (`switch.cli.common`). No card numbers are printed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from tqdm import tqdm  # type: ignore[import-untyped]

from ledger.core import Balance, PostedTransfer, ReviewItem
from ledger.demo import init_demo
from ledger.medical.split import yuan
from ledger.migrate import current_sqlite, head, upgrade_sqlite
from ledger.personal import PersonalKeys
from switch.cli.auth import logged_in
from switch.cli.common import Database, database_options, deployment_home, with_back_office
from switch.cli.human import human_time
from switch.key_home import PRIVATE_UMASK

if TYPE_CHECKING:  # the database drivers load when a command runs, not for --help
    from switch.database import BackOffice


@click.group("ledger")
def ledger_group() -> None:
    """The money: balances, history, items in review, schema migrations."""


@ledger_group.command()
@database_options
def migrate(database: Database) -> None:
    """Create or upgrade the database schema to the newest revision."""
    from switch.database import is_postgres, migrate_postgres

    url = database.resolve()
    if is_postgres(url):
        asyncio.run(migrate_postgres(url))
        click.echo(f"{url.split('@')[-1]}: schema at the newest revision {head()}")
        return
    db = Path(url.removeprefix("sqlite:///"))
    db.parent.mkdir(0o700, parents=True, exist_ok=True)  # new: private (the file: 0600)
    upgrade_sqlite(db)
    click.echo(f"{db}: schema at revision {current_sqlite(db)} (newest {head()})")


@ledger_group.command()
@click.argument("account")
@database_options
@logged_in
def balance(account: str, database: Database) -> None:
    """Show an account's posted debits, credits and balance (ids like pf:0000000001)."""

    async def use(office: BackOffice) -> Balance | None:
        return await (await office.ledger()).balance(account)

    found = with_back_office(database, use)
    if found is None:
        raise click.ClickException(f"no account {account}")
    click.echo(
        f"{found.account_id} {found.kind.name} debits {yuan(found.debits_posted_fen)} "
        f"credits {yuan(found.credits_posted_fen)} balance {yuan(found.balance_fen)} yuan"
        + (" closed" if found.closed else "")
    )


@ledger_group.command()
@click.argument("account")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@database_options
@logged_in
def history(account: str, limit: int, database: Database) -> None:
    """The last transfers touching an account, oldest first."""

    async def use(office: BackOffice) -> list[PostedTransfer]:
        return await (await office.ledger()).history(account, limit)

    for posted in with_back_office(database, use):
        t = posted.transfer
        click.echo(
            f"{posted.seq:>8} {human_time(posted.posted_at_us)} {t.code:>4} "
            f"{t.debit_account_id} -> {t.credit_account_id} {yuan(t.amount_fen):>12} yuan "
            f"{t.reference}"
        )


@ledger_group.command()
@database_options
@logged_in
def reviews(database: Database) -> None:
    """Exceptions held for a person."""

    async def use(office: BackOffice) -> list[ReviewItem]:
        return await (await office.ledger()).reviews()

    for item in with_back_office(database, use):
        click.echo(
            f"{item.reason:<24} {yuan(item.amount_fen):>12} yuan {item.reference} {item.detail}"
        )


@click.command("init")
@click.option("--cardholders", default=10_000, show_default=True, type=click.IntRange(1, 10**7))
@click.option("--seed", default=1, show_default=True, help="Same seed, same deployment.")
@click.option("--force", is_flag=True, help="Replace an existing database (SQLite).")
@database_options
@click.option(
    "--keys-home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The key home the demo's personal-data keys are made in (TEST ONLY LMK) [default: "
    "the database's directory; on PostgreSQL $MEDSWITCH_HOME, or var/demo].",
)
def demo_init(
    cardholders: int, seed: int, force: bool, database: Database, keys_home: Path | None
) -> None:
    """Institutions of each kind and level, terminals with PSAMs, cardholders with cards and
    funded personal accounts; names and ID numbers sealed under the home's PERSONAL_DATA key
    (made with the other centre keys if missing). Terminal keys are made by `medswitch keys`
    or `medswitch run`. On PostgreSQL the schema is migrated and must hold no deployment yet."""
    from switch.database import is_postgres

    url = database.resolve()
    if is_postgres(url):
        home = keys_home or deployment_home()
        _demo_init_postgres(url, cardholders, seed, force, _demo_keys(home))
        return
    db = Path(url.removeprefix("sqlite:///"))
    if db.exists():
        if not force:
            raise click.ClickException(f"{db} exists (use --force to replace it)")
        from switch.reply_file import replies_file

        for file in (db, replies_file(db)):  # the old deployment's replies go with it
            for suffix in ("", "-wal", "-shm"):
                file.with_name(file.name + suffix).unlink(missing_ok=True)
    db.parent.mkdir(0o700, parents=True, exist_ok=True)  # new: private (the file: 0600)
    personal = _demo_keys(keys_home or db.parent)
    start = time.perf_counter()
    with tqdm(total=cardholders, unit="cardholder", disable=None) as bar:
        summary = init_demo(db, cardholders, personal=personal, seed=seed, progress=bar.update)
    click.echo(
        f"{db}: {summary.institutions} institutions, {summary.terminals} terminals, "
        f"{summary.cardholders} cardholders, {summary.accounts} accounts; personal funds "
        f"{summary.personal_fen / 100:,.2f} yuan, pooled fund {summary.pooled_fen / 100:,.2f} "
        f"yuan ({time.perf_counter() - start:.1f} s)"
    )
    from switch.cli.operators import enrol_demo

    for line in enrol_demo(url):
        click.echo(line)


def _demo_keys(home: Path) -> PersonalKeys:
    """The demo's personal-data keys in ``home`` (made private if new; an existing directory,
    which may be any the database was put in, keeps its mode: its key files are 0600)."""
    from switch.demo.keys import demo_personal_keys

    os.umask(PRIVATE_UMASK)
    home.mkdir(0o700, parents=True, exist_ok=True)
    return asyncio.run(demo_personal_keys(home))


def _demo_init_postgres(
    url: str, cardholders: int, seed: int, force: bool, personal: PersonalKeys
) -> None:
    import asyncpg  # type: ignore[import-untyped]

    if force:
        raise click.ClickException("--force replaces SQLite files only; drop the schema instead")
    start = time.perf_counter()
    try:
        with tqdm(total=cardholders, unit="cardholder", disable=None) as bar:
            summary = init_demo(
                url, cardholders, personal=personal, seed=seed, progress=bar.update
            )
    except FileExistsError as err:
        raise click.ClickException(str(err)) from None
    except (OSError, asyncpg.PostgresError) as err:
        raise click.ClickException(f"PostgreSQL: {err}") from None
    host = url.split("@")[-1]  # never the password
    click.echo(
        f"{host}: {summary.institutions} institutions, {summary.terminals} terminals, "
        f"{summary.cardholders} cardholders, {summary.accounts} accounts "
        f"({time.perf_counter() - start:.1f} s)"
    )
    from switch.cli.operators import enrol_demo

    for line in enrol_demo(url):
        click.echo(line)

"""`medswitch ledger ...` (balances, history, review items, migrations) and `medswitch demo init`
(a demo deployment), on the embedded SQLite file (--db) or PostgreSQL (--database URL,
MEDSWITCH_DATABASE_URL). No card numbers are printed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from tqdm import tqdm  # type: ignore[import-untyped]

from ledger.core import Ledger
from ledger.demo import init_demo
from ledger.migrate import current_sqlite, head, upgrade_sqlite
from ledger.personal import PersonalKeys
from ledger.pg_bridge import split_url
from ledger.pg_ledger import PgLedger
from ledger.sqlite_ledger import SqliteLedger
from switch.key_home import PRIVATE_UMASK

T = TypeVar("T")


def default_db() -> Path:
    """The demo deployment's database, as the switch's configuration places it by default."""
    return Path(os.environ.get("MEDSWITCH_HOME", "var/demo")) / "medswitch.db"


db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=default_db,
    envvar="MEDSWITCH_DB",
    show_default="$MEDSWITCH_HOME/medswitch.db, home var/demo",
    help="The embedded SQLite database.",
)


database_option = click.option(
    "--database",
    "database_url",
    default=None,
    envvar="MEDSWITCH_DATABASE_URL",
    help="postgresql://... (?schema=NAME optional) instead of the SQLite file --db.",
)


def _postgres(url: str | None) -> str | None:
    if not url or url.startswith("sqlite:///"):
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.ClickException("--database is postgresql://... or sqlite:///FILE")
    return url


def _sqlite(db: Path, url: str | None) -> Path:
    return Path(url.removeprefix("sqlite:///")) if url else db


def _with_ledger(db: Path, url: str | None, use: Callable[[Ledger], Awaitable[T]]) -> T:
    postgres = _postgres(url)
    db = _sqlite(db, url)
    if postgres is None and not db.exists():
        raise click.ClickException(f"{db} does not exist (medswitch demo init, or ledger migrate)")

    async def run() -> T:
        if postgres is None:
            ledger: Ledger = SqliteLedger.open(db)
        else:
            dsn, schema = split_url(postgres)
            ledger = await PgLedger.open(dsn, schema=schema)
        try:
            return await use(ledger)
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except OSError as err:
        raise click.ClickException(f"database: {err}") from None


@click.group("ledger")
def ledger_group() -> None:
    """The money: balances, history, items in review, schema migrations."""


@ledger_group.command()
@db_option
@database_option
def migrate(db: Path, database_url: str | None) -> None:
    """Create or upgrade the database schema to the newest revision."""
    postgres = _postgres(database_url)
    if postgres is not None:
        from switch.database import migrate_postgres

        asyncio.run(migrate_postgres(postgres))
        click.echo(f"{postgres.split('@')[-1]}: schema at the newest revision {head()}")
        return
    db = _sqlite(db, database_url)
    db.parent.mkdir(0o700, parents=True, exist_ok=True)  # new: private (the file: 0600)
    upgrade_sqlite(db)
    click.echo(f"{db}: schema at revision {current_sqlite(db)} (newest {head()})")


@ledger_group.command()
@click.argument("account")
@db_option
@database_option
def balance(account: str, db: Path, database_url: str | None) -> None:
    """Show an account's posted debits, credits and balance (ids like pf:0000000001)."""
    found = _with_ledger(db, database_url, lambda ledger: ledger.balance(account))
    if found is None:
        raise click.ClickException(f"no account {account}")
    click.echo(
        f"{found.account_id} {found.kind.name} debits={found.debits_posted_fen} "
        f"credits={found.credits_posted_fen} balance_fen={found.balance_fen}"
        + (" closed" if found.closed else "")
    )


@ledger_group.command()
@click.argument("account")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@db_option
@database_option
def history(account: str, limit: int, db: Path, database_url: str | None) -> None:
    """The last transfers touching an account, oldest first."""
    for posted in _with_ledger(db, database_url, lambda ledger: ledger.history(account, limit)):
        t = posted.transfer
        click.echo(
            f"{posted.seq:>8} {t.code:>4} {t.debit_account_id} -> {t.credit_account_id} "
            f"{t.amount_fen} {t.reference}"
        )


@ledger_group.command()
@db_option
@database_option
def reviews(db: Path, database_url: str | None) -> None:
    """Exceptions held for a person."""
    for item in _with_ledger(db, database_url, lambda ledger: ledger.reviews()):
        click.echo(f"{item.reason:<24} {item.amount_fen:>10} {item.reference} {item.detail}")


@click.group("demo")
def demo_group() -> None:
    """A demo deployment on the embedded SQLite database or on PostgreSQL."""


@demo_group.command("init")
@click.option("--cardholders", default=10_000, show_default=True, type=click.IntRange(1, 10**7))
@click.option("--seed", default=1, show_default=True, help="Same seed, same deployment.")
@click.option("--force", is_flag=True, help="Replace an existing database (SQLite).")
@click.option(
    "--database",
    "database_url",
    default=None,
    envvar="MEDSWITCH_DATABASE_URL",
    help="postgresql://... (?schema=NAME optional; migrated, must hold no deployment yet) "
    "instead of the SQLite file --db.",
)
@click.option(
    "--keys-home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The key home the demo's personal-data keys are made in (TEST ONLY LMK) [default: "
    "the database's directory; on PostgreSQL $MEDSWITCH_HOME, or var/demo].",
)
@db_option
def demo_init(
    cardholders: int,
    seed: int,
    force: bool,
    database_url: str | None,
    keys_home: Path | None,
    db: Path,
) -> None:
    """Institutions of each kind and level, terminals with PSAMs, cardholders with cards and
    funded personal accounts; names and ID numbers sealed under the home's PERSONAL_DATA key
    (made with the other centre keys if missing). Terminal keys are made by `medswitch keys`
    or `medswitch run`."""
    if database_url and not database_url.startswith("sqlite:///"):
        home = keys_home or Path(os.environ.get("MEDSWITCH_HOME", "var/demo"))
        _demo_init_postgres(database_url, cardholders, seed, force, _demo_keys(home))
        return
    if database_url:
        db = Path(database_url.removeprefix("sqlite:///"))
    if db.exists():
        if not force:
            raise click.ClickException(f"{db} exists (use --force to replace it)")
        for suffix in ("", "-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
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

    if not url.startswith(("postgresql://", "postgres://")):
        raise click.ClickException("--database is postgresql://... or sqlite:///FILE")
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

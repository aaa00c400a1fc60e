"""What every command shares: the options (key home, LMK components, database, configuration),
one deployment opener and one mapping of errors to one-line messages (exit code 1).

The database a command works on: ``--db FILE`` (a SQLite file, env MEDSWITCH_DB), else
``--database URL`` (env MEDSWITCH_DATABASE_URL), else the deployment configuration's
``[database] url`` (``--config``, default ``$MEDSWITCH_HOME/medswitch.toml``; without one the
SQLite file ``$MEDSWITCH_HOME/medswitch.db``). A value on the command line wins over one from
the environment.

Light on purpose: the HSM, the ledger and the database drivers are imported by the functions
that use them, so that a command which needs none of them starts fast (`switch.cli.lazy`).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from switch.key_home import Home, KeyNotFound

if TYPE_CHECKING:
    from hsm.keys import KeyRef
    from hsm.lmk import Component
    from hsm.soft import SoftHsm
    from switch.config import Config
    from switch.database import BackOffice

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

HOME_ENV = "MEDSWITCH_HOME"
#: The deployment's home when MEDSWITCH_HOME is unset: the demo's (as ``switch.config``), so
#: every command — keys, cards, daemon, ledger, back office — works on the same deployment.
DEFAULT_HOME = "var/demo"


# -- options ------------------------------------------------------------------------------------
def home_option(
    *names: str, default: str = DEFAULT_HOME, help: str = "The deployment's home (its key store)."
) -> Callable[[F], F]:
    """The deployment's home (`--home` or `--keys-home`), env MEDSWITCH_HOME, default the
    demo's: the key home is the deployment's home."""
    return click.option(
        *(names or ("--home",)),
        envvar=HOME_ENV,
        default=default,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


class ComponentSource(click.ParamType[Path]):
    """A custodian's component file (existing), or `key-card:READER[#SLOT]`: the component on
    the custodian's key card (switch.cli.key_cards)."""

    name = "FILE|key-card:READER"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        text = str(value)
        if text.startswith("key-card:"):
            if not text.removeprefix("key-card:").strip():
                self.fail("key-card: needs a reader name", param, ctx)
        elif not Path(text).is_file():
            self.fail(f"file {text!r} does not exist", param, ctx)
        return Path(text)


component_files_option = click.option(
    "-c",
    "--component-file",
    "component_files",
    multiple=True,
    type=ComponentSource(),
    help="LMK component file of one custodian, or key-card:READER (repeat); prompts when absent.",
)
component_count_option = click.option(
    "--components",
    "count",
    default=2,
    show_default=True,
    type=click.IntRange(2, 9),
    help="How many LMK components to prompt for.",
)
keys_home_option = home_option("--keys-home", "keys_home")
file_key_option = click.option(
    "--file-key", required=True, help="ALIAS[:VERSION] of the counterparty's file key."
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file (default $MEDSWITCH_HOME/medswitch.toml).",
)


def default_db() -> Path:
    """The demo deployment's database, as the configuration places it by default."""
    return deployment_home() / "medswitch.db"


def deployment_home() -> Path:
    """$MEDSWITCH_HOME, else the demo's home."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


@dataclass(frozen=True, slots=True)
class Database:
    """Which database a command was asked to open (see the module's docstring)."""

    db: Path | None = None
    url: str | None = None
    config_path: Path | None = None

    def resolve(self) -> str:
        """The database URL: sqlite:///FILE or postgresql://..."""
        if self.db is not None:
            return f"sqlite:///{self.db}"
        if self.url:
            if not self.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
                raise click.ClickException("--database is postgresql://... or sqlite:///FILE")
            return self.url
        return load_config(self.config_path).database

    def config(self) -> Config:
        return load_config(self.config_path)


def database_options(function: F) -> F:
    """`--db`, `--database` and `--config`, given to the command as one ``database: Database``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        db, url = kwargs.pop("db"), kwargs.pop("database_url")
        ctx = click.get_current_context()
        if db is not None and url is not None:  # the command line's over the environment's
            if _rank(ctx, "database_url") > _rank(ctx, "db"):
                db = None
            else:
                url = None
        kwargs["database"] = Database(db, url, kwargs.pop("config_path"))
        return function(*args, **kwargs)

    for option in (
        config_option,
        click.option(
            "--database",
            "database_url",
            default=None,
            envvar="MEDSWITCH_DATABASE_URL",
            help="postgresql://... (?schema=NAME optional) or sqlite:///FILE "
            "(default: the configuration's [database] url).",
        ),
        click.option(
            "--db",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            envvar="MEDSWITCH_DB",
            help="A SQLite file instead of the configured database.",
        ),
    ):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _rank(ctx: click.Context, name: str) -> int:
    source = ctx.get_parameter_source(name)
    return 2 if source is ParameterSource.COMMANDLINE else 1


def load_config(path: Path | None = None) -> Config:
    from switch import config as config_module

    try:
        return config_module.load(path)
    except config_module.ConfigError as error:
        raise click.ClickException(str(error)) from None


# -- the deployment opener ----------------------------------------------------------------------
def check_database(database: Database) -> str:
    """The URL, once its SQLite file is known to exist (before any prompt for components)."""
    from switch.database import check_exists

    url = database.resolve()
    with database_errors():
        check_exists(url)
    return url


def with_back_office(
    database: Database | str,
    use: Callable[[BackOffice], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    """``use`` run on the deployment's back-office stores (`switch.database.open_back_office`;
    ``create``: a missing SQLite file is made), closed afterwards; errors in one line."""
    from switch.database import open_back_office

    url = database if isinstance(database, str) else database.resolve()

    async def run() -> T:
        office = await open_back_office(url, create=create)
        try:
            return await use(office)
        finally:
            await office.close()

    with database_errors():
        return asyncio.run(run())


def with_engine(database: Database | str, use: Callable[[Any], T], *, create: bool = False) -> T:
    """``use`` given the back office's SQLAlchemy Core engine (synchronous commands)."""

    async def run(office: BackOffice) -> T:
        return use(office.engine)

    return with_back_office(database, run, create=create)


# -- errors -------------------------------------------------------------------------------------
@contextmanager
def cli_errors(prefix: str = "", *, named: bool = False) -> Iterator[None]:
    """HSM errors (never carrying key material) and keys not found, as one-line messages:
    ``prefix`` before the message, ``named`` with the error's class name."""
    from hsm.errors import HsmError

    try:
        yield
    except (HsmError, KeyNotFound) as error:
        text = f"{type(error).__name__}: {error}" if named else str(error)
        raise click.ClickException(prefix + text) from None


@contextmanager
def database_errors() -> Iterator[None]:
    """A missing SQLite file, PostgreSQL's refusals, a database that cannot be reached."""
    from asyncpg import PostgresError  # type: ignore[import-untyped]

    from switch.database import DatabaseMissing

    try:
        yield
    except DatabaseMissing as error:
        raise click.ClickException(str(error)) from None
    except PostgresError as error:
        raise click.ClickException(f"PostgreSQL: {error}") from None
    except OSError as error:
        raise click.ClickException(f"database: {error}") from None


# -- the key home and the HSM -------------------------------------------------------------------
def read_components(
    files: Sequence[Path], count: int, what: str, home: Path | None = None
) -> list[Component]:
    """Components from the custodians' files or key cards (read for HOME's HSM), or at hidden
    prompts when none is given."""
    from hsm.lmk import Component
    from switch.cli.key_cards import read_sources

    if files:
        with cli_errors():
            return read_sources(files, home)
    components = []
    for i in range(1, count + 1):
        custodian = click.prompt(f"{what} component {i}: custodian name")
        value = click.prompt(f"{custodian}, enter your component", hide_input=True)
        check = click.prompt(f"{custodian}, enter its check value")
        with cli_errors():
            components.append(Component.parse(value, check))
        click.echo(f"component {i} accepted, KCV {components[-1].kcv}")
    return components


def load_hsm(
    home: Home, files: Sequence[Path], count: int = 2, *, production: bool = False
) -> SoftHsm:
    """The software HSM over HOME's key store, its LMK formed from the custodians' components."""
    from hsm.lmk import is_test_only
    from switch.key_home import TEST_ONLY_BANNER, open_soft_hsm

    components = read_components(files, count, "LMK", home.path)
    with cli_errors():
        hsm = open_soft_hsm(home.path, components, production=production)
    if is_test_only(components):
        click.echo(TEST_ONLY_BANNER, err=True)
    return hsm


async def resolve(home: Home, text: str) -> KeyRef:
    """ALIAS or ALIAS:VERSION → the stored reference (latest version by default)."""
    from switch.key_home import resolve as resolve_stored

    with cli_errors():
        return await resolve_stored(home, text)


def hsm_and_key(home: Home, files: Sequence[Path], alias: str) -> tuple[SoftHsm, KeyRef]:
    """The HSM and the stored key ALIAS[:VERSION] (a counterparty's file key)."""
    hsm = load_hsm(home, files, 2)
    return hsm, asyncio.run(resolve(home, alias))

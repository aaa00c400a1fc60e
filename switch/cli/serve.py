"""`medswitch serve` (the daemon) and `medswitch routes` (the route table).

The software HSM's LMK is formed at start from ``hsm.lmk_components``: custodians' component
files, or ``key-card:READER[#SLOT]`` — a custodian's key card, read through PC/SC only into this
home's HSM after its PIN, asked once at start (before any worker forks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from datetime import UTC, datetime
from pathlib import Path

import click

from hsm.interface import Hsm
from hsm.keystore import KeyStore
from hsm.lmk import Component
from routing.bank_routes import bank_routes
from routing.table import RouteTable
from routing.terminal_routes import terminal_routes
from switch.config import Config, ConfigError, check, load
from switch.database import open_stores
from switch.key_home import private_home
from switch.keystore_file import FileKeyStore
from switch.pg_stores import RoutedKeyStore
from switch.sessions import Sessions, SharedSessions, SignOnLimit
from switch.workers import run_workers


def _load_config(path: Path | None) -> Config:
    try:
        return load(path)
    except ConfigError as err:
        raise click.ClickException(f"configuration: {err}") from None


def _lmk_components(config: Config) -> list[Component]:
    """The configured LMK components: files read, key cards read after their PINs."""
    from hsm.errors import HsmError
    from switch.cli.key_cards import read_sources

    files = [Path(f) for f in config.hsm.lmk_components]
    if not files:
        raise click.ClickException(
            "hsm.lmk_components names no component files: the daemon forms the LMK from them"
        )
    try:
        return read_sources(files, config.home_path)
    except (HsmError, OSError, ValueError) as err:
        raise click.ClickException(f"HSM: {err}") from None


def _soft_hsm(config: Config, store: KeyStore, components: list[Component]) -> Hsm:
    """The software HSM over ``store``, its LMK formed from the components and checked against
    the home's recorded check value (`switch.key_home.soft_hsm_over`)."""
    from hsm.errors import HsmError
    from switch.key_home import soft_hsm_over

    try:
        return soft_hsm_over(config.home_path, components, store)
    except (HsmError, OSError) as err:
        raise click.ClickException(f"HSM: {err}") from None


async def _run(config: Config, worker: int = 0, components: list[Component] | None = None,
               ) -> None:
    """One worker: the stores, the key store and HSM over them, the app until SIGTERM.

    Keys: terminals' working keys and their sets go to the database (``session_keys``,
    ``session_sets``: bounded, on PostgreSQL shared by every worker); the rest stays in the file
    the key ceremonies write."""
    # The daemon loads when it runs, not for `medswitch --help` or `routes`.
    from switch import descriptors
    from switch.app import open_app, serve_until_signalled

    config = descriptors.fit(config, descriptors.raise_nofile())  # before any listener is built
    stores = await open_stores(config.database, writer_process=config.writer_process)
    try:
        files = FileKeyStore(config.home_path / "keys.jsonl")
        sets = stores.session_sets()
        store: KeyStore = RoutedKeyStore(sets, files)
        limit = SignOnLimit(config.sign_on.per_minute, config.sign_on.pending_max)
        shared = SharedSessions if stores.pool is not None else Sessions
        sessions = shared(files, sets, limit)
        if config.hsm.backend == "network":
            from switch.hsm_net import HsmClient

            hsm: Hsm = await HsmClient.connect(
                config.hsm.host, config.hsm.port, config.hsm.timeout_s
            )
        else:
            hsm = _soft_hsm(config, store, components or [])
        app = await open_app(config, hsm, sessions, stores=stores, worker=worker)
    except BaseException:
        await stores.close()
        raise
    await serve_until_signalled(app)


def _serve_one(config: Config, worker: int = 0, components: list[Component] | None = None,
               ) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    try:
        asyncio.run(_run(config, worker, components))
    except OSError as error:  # a port in use or not ours: one line, no traceback
        if error.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        click.echo(f"Error: cannot listen: {error.strerror or error}", err=True)
        raise SystemExit(1) from None


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML file (default $MEDSWITCH_HOME/medswitch.toml).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes on the same ports (SO_REUSEPORT; PostgreSQL only). "
    "Default: the configuration's `workers`.",
)
def serve(config_path: Path | None, workers: int | None) -> None:
    """Run the switch: terminal listener, the bank link ([bank] enabled), /metrics, /healthz,
    /readyz. Stops on SIGTERM."""
    from switch import logs

    config = _load_config(config_path)
    logs.configure(logging.getLevelNamesMapping()[config.log_level.upper()])
    private_home(config.home_path)  # 0700, and what the daemon writes 0600
    if config.trace_file:
        from switch.trace import open_trace

        try:
            open_trace(Path(config.trace_file))
        except OSError as err:
            raise click.ClickException(f"trace_file: {err.strerror}: {config.trace_file}") from None
    if workers is not None:
        config = dataclasses.replace(config, workers=workers)
        try:
            check(config)
        except ConfigError as err:
            raise click.ClickException(f"--workers {workers}: {err}") from None
    if not config.postgres and not config.sqlite_path.exists():
        raise click.ClickException(
            f"no database at {config.sqlite_path}: run `medswitch demo init` first"
        )
    if config.hsm.backend not in ("soft", "network"):
        raise click.ClickException("hsm.backend is soft or network")
    components = _lmk_components(config) if config.hsm.backend == "soft" else None
    if config.workers == 1:
        _serve_one(config, 0, components)
        return
    code = run_workers(config.workers, lambda index: _serve_one(config, index, components))
    if code:
        raise SystemExit(code)


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
def routes(config_path: Path | None) -> None:
    """Print the route table, terminal and bank interfaces (checked for ambiguity when built);
    kiosk EP loads by card BIN to the configured bank links."""
    from switch.bank.host import configured_savings_routes

    banks = configured_savings_routes(_load_config(config_path).bank)
    click.echo(RouteTable(terminal_routes(banks).routes + bank_routes().routes).describe())


@click.command()
@click.option(
    "--cardholders", default=10_000, show_default=True, help="Cardholders in a new demo deployment."
)
@click.pass_context
def run(ctx: click.Context, cardholders: int) -> None:
    """What `make run` does: set up the demo deployment if there is none, then serve.

    The demo lives in $MEDSWITCH_HOME (default var/demo): an embedded SQLite database with
    institutions, terminals and funded cardholders, keys from the published TEST ONLY
    components, and a medswitch.toml. An existing deployment is served as it is."""
    import sqlite3

    from tqdm import tqdm  # type: ignore[import-untyped]

    from ledger.demo import init_demo
    from switch.cli.operators import enrol_demo
    from switch.demo import keys as demo_keys
    from switch.demo import medical as demo_medical

    config = _load_config(None)
    if config.postgres:
        raise click.ClickException(
            "medswitch run sets up the embedded SQLite demo; on PostgreSQL run "
            "`medswitch demo init --database URL`, provision keys, then `medswitch serve`"
        )
    home = private_home(config.home_path)  # 0700, and what it writes 0600
    database = config.sqlite_path
    if not database.exists():
        click.echo(f"creating the demo deployment in {home} (TEST ONLY keys)")
        personal = asyncio.run(demo_keys.demo_personal_keys(home))  # the centre's keys first
        with tqdm(total=cardholders, unit=" cardholders") as bar:
            init_demo(database, cardholders, personal=personal, progress=bar.update)
    with sqlite3.connect(database) as connection:
        terminals = [row[0] for row in connection.execute("SELECT id FROM terminals")]
    created = asyncio.run(demo_keys.provision(home, terminals))
    made = list(demo_medical.provision(home, database, datetime.now(UTC)))
    if created:  # one line, not one per key: their check values are in the key store
        made.insert(0, f"{len(created)} keys (check values: medswitch keys --home {home} list)")
    made += enrol_demo(f"sqlite:///{database}")
    if made:
        click.echo("demo: " + "; ".join(made))
    demo_keys.write_config(home)
    from switch.cli import sandbox

    config = _load_config(None)
    url = sandbox.his_url(config)
    for line in sandbox.provision(home.resolve(), database, config.terminal.port, url):
        click.echo(line)
    ctx.invoke(serve, config_path=None)

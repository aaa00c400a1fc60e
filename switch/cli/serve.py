"""`medswitch serve` (the daemon) and `medswitch routes` (the route table)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path

import click

from hsm.interface import Hsm
from hsm.keystore import KeyStore
from routing.bank_routes import bank_routes
from routing.table import RouteTable
from routing.terminal_routes import terminal_routes
from switch import logs
from switch.app import App, serve_until_signalled
from switch.config import Config, ConfigError, check, load
from switch.database import open_stores
from switch.keystore_file import FileKeyStore
from switch.pg_stores import PgKeyStore, RoutedKeyStore
from switch.sessions import Sessions, SharedSessions
from switch.workers import run_workers


def _load_config(path: Path | None) -> Config:
    try:
        return load(path)
    except ConfigError as err:
        raise click.ClickException(f"configuration: {err}") from None


def _soft_hsm(config: Config, store: KeyStore) -> Hsm:
    """The software HSM over ``store``, its LMK formed from the configured components and
    checked against the home's recorded check value (as ``cli_keys.open_soft_hsm``)."""
    from hsm.errors import HsmError, LmkError
    from hsm.lmk import Lmk
    from hsm.soft import SoftHsm
    from switch.key_home import Home, component_files_of

    files = [Path(f) for f in config.hsm.lmk_components]
    if not files:
        raise click.ClickException(
            "hsm.lmk_components names no component files: the daemon forms the LMK from them"
        )
    try:
        expected = Home(config.home_path, "").expected_lmk_kcv()
        if expected is None:
            raise LmkError("no LMK configured: run `medswitch keys lmk-form --new` first")
        return SoftHsm(Lmk(component_files_of(files), expected), store)
    except (HsmError, OSError) as err:
        raise click.ClickException(f"HSM: {err}") from None


async def _run(config: Config, worker: int = 0) -> None:
    """One worker: the stores, the key store and HSM over them, the app until SIGTERM.

    Keys: on SQLite the file key store holds every key; on PostgreSQL terminals' working keys
    go to the database (every worker uses a sign-on any worker answered) and the rest stays in
    the file the key ceremonies write."""
    stores = await open_stores(config.database, writer_process=config.writer_process)
    try:
        files = FileKeyStore(config.home_path / "keys.jsonl")
        store: KeyStore = files
        sessions = Sessions(files)
        if stores.pool is not None:
            store = RoutedKeyStore(PgKeyStore(stores.pool), files)
            sessions = SharedSessions(store)
        if config.hsm.backend == "network":
            from switch.hsm_net import HsmClient

            hsm: Hsm = await HsmClient.connect(
                config.hsm.host, config.hsm.port, config.hsm.timeout_s
            )
        else:
            hsm = _soft_hsm(config, store)
    except BaseException:
        await stores.close()
        raise
    app = App(config, hsm, sessions, stores=stores, worker=worker)
    await serve_until_signalled(app)


def _serve_one(config: Config, worker: int = 0) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(_run(config, worker))


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
    logs.configure(logging.INFO)
    config = _load_config(config_path)
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
    if config.workers == 1:
        _serve_one(config)
        return
    code = run_workers(config.workers, lambda index: _serve_one(config, index))
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
    from switch.demo import keys as demo_keys
    from switch.demo import medical as demo_medical

    config = _load_config(None)
    if config.postgres:
        raise click.ClickException(
            "medswitch run sets up the embedded SQLite demo; on PostgreSQL run "
            "`medswitch demo init --database URL`, provision keys, then `medswitch serve`"
        )
    home = config.home_path
    database = config.sqlite_path
    if not database.exists():
        home.mkdir(parents=True, exist_ok=True)
        click.echo(f"creating the demo deployment in {home} (TEST ONLY keys)")
        with tqdm(total=cardholders, unit=" cardholders") as bar:
            init_demo(database, cardholders, progress=bar.update)
    with sqlite3.connect(database) as connection:
        terminals = [row[0] for row in connection.execute("SELECT id FROM terminals")]
    created = asyncio.run(demo_keys.provision(home, terminals))
    for alias, check_value in created.items():
        click.echo(f"key {alias} KCV {check_value}")
    for what in demo_medical.provision(home, database, datetime.now(UTC)):
        click.echo(f"medical: {what}")
    demo_keys.write_config(home)
    from switch.cli import sandbox

    config = _load_config(None)
    for line in sandbox.provision(home.resolve(), database, config.terminal.port, config.http.port):
        click.echo(line)
    ctx.invoke(serve, config_path=None)

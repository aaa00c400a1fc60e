"""`medswitch serve` (the daemon) and `medswitch routes` (the route table)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import click

from hsm.interface import Hsm
from routing.bank_routes import bank_routes
from routing.table import RouteTable
from routing.terminal_routes import terminal_routes
from switch import logs
from switch.app import App, serve_until_signalled
from switch.config import Config, ConfigError, load
from switch.keystore_file import FileKeyStore
from switch.sessions import Sessions


def _load_config(path: Path | None) -> Config:
    try:
        return load(path)
    except ConfigError as err:
        raise click.ClickException(f"configuration: {err}") from None


def _soft_hsm(config: Config) -> Hsm:
    from hsm.errors import HsmError
    from switch.cli_keys import component_files_of, open_soft_hsm

    files = [Path(f) for f in config.hsm.lmk_components]
    if not files:
        raise click.ClickException(
            "hsm.lmk_components names no component files: the daemon forms the LMK from them"
        )
    try:
        return open_soft_hsm(config.home_path, component_files_of(files))
    except (HsmError, OSError) as err:
        raise click.ClickException(f"HSM: {err}") from None


async def _run(config: Config) -> None:
    if config.hsm.backend == "network":
        from switch.hsm_net import HsmClient

        hsm: Hsm = await HsmClient.connect(config.hsm.host, config.hsm.port, config.hsm.timeout_s)
    else:
        hsm = _soft_hsm(config)
    app = App(config, hsm, Sessions(FileKeyStore(config.home_path / "keys.jsonl")))
    await serve_until_signalled(app)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML file (default $MEDSWITCH_HOME/medswitch.toml).",
)
def serve(config_path: Path | None) -> None:
    """Run the switch: terminal listener, the bank link ([bank] enabled), /metrics, /healthz,
    /readyz. Stops on SIGTERM."""
    logs.configure(logging.INFO)
    config = _load_config(config_path)
    database = Path(config.database.removeprefix("sqlite:///"))
    if config.database.startswith("sqlite") and not database.exists():
        raise click.ClickException(f"no database at {database}: run `medswitch demo init` first")
    if config.hsm.backend not in ("soft", "network"):
        raise click.ClickException("hsm.backend is soft or network")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(_run(config))


@click.command()
def routes() -> None:
    """Print the route table, terminal and bank interfaces (checked for ambiguity when built)."""
    click.echo(RouteTable(terminal_routes().routes + bank_routes().routes).describe())


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
    from switch import demo_keys, demo_medical

    config = _load_config(None)
    home = config.home_path
    database = Path(config.database.removeprefix("sqlite:///"))
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
    ctx.invoke(serve, config_path=None)

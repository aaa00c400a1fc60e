"""`medswitch hsm serve`: one software HSM over the payShield-style host-command protocol."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from switch.cli.common import component_count_option, component_files_option, home_option, load_hsm
from switch.hsm_net import HsmServer
from switch.key_home import Home


@click.group("hsm")
def hsm_group() -> None:
    """The network HSM."""


@hsm_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=1500,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port; the bound port is printed.",
)
@home_option(help="Directory of the key store and the LMK check value (env MEDSWITCH_HOME).")
@component_files_option
@component_count_option
@click.option("--production", is_flag=True, help="Refuse the published TEST ONLY components.")
def serve(
    host: str,
    port: int,
    home: Path,
    component_files: tuple[Path, ...],
    count: int,
    production: bool,
) -> None:
    """Form the LMK from its components and serve the key store in HOME over TCP."""
    import getpass

    keys_home = Home(home, getpass.getuser())
    soft = load_hsm(keys_home, component_files, count, production=production)
    keys_home.audit("hsm.serve", kcv=asyncio.run(soft.diagnostics()), host=host, port=port)

    async def run() -> None:
        server = HsmServer(soft)
        bound = await server.start(host, port)
        click.echo(f"hsm listening on {host}:{bound} (LMK KCV {await soft.diagnostics()})")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        await soft.close()

    asyncio.run(run())

"""`medswitch nac`: the network access controller for dial-up POS (specs/dialup.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from switch.nac.config import Table, TableError, load_table

table_option = click.option(
    "--table",
    "table_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The controller's TOML table: numbers, lines, routes by NII.",
)


def _load(path: Path) -> Table:
    try:
        return load_table(path)
    except TableError as error:
        raise click.ClickException(f"{path}: {error}") from None


@click.group("nac")
def nac_group() -> None:
    """The network access controller: modem lines in, routed by TPDU to hosts."""


@nac_group.command("check")
@table_option
def check_command(table_file: Path) -> None:
    """Check the table and print its lines and routes."""
    table = _load(table_file)
    for line in table.lines:
        where = line.pty or line.device
        click.echo(
            f"line {line.number} {line.name}: {where} {line.speed_bps} bps {line.framing.value}"
        )
    for nii, hosts in sorted(table.routes.items()):
        click.echo(f"NII {nii} -> {', '.join(map(str, hosts))}")


@nac_group.command("run")
@table_option
def run_command(table_file: Path) -> None:
    """Answer the lines and route their frames until SIGTERM or SIGINT."""
    from switch import logs
    from switch.nac.server import Nac

    table = _load(table_file)
    logs.configure()

    async def serve() -> None:
        nac = Nac(table)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await nac.start()
        except OSError as error:
            await nac.stop()
            raise click.ClickException(f"cannot start: {error}") from None
        url = f"http://{table.settings.status_host}:{nac.status_port}"
        if table.settings.status_file is not None:
            table.settings.status_file.write_text(url + "\n")
        sys.stdout.write(
            f"medswitch nac serving: {len(table.lines)} line(s), status on "
            f"{table.settings.status_host}:{nac.status_port}\n"
        )
        sys.stdout.flush()
        await stop.wait()
        await nac.stop()
        if table.settings.status_file is not None:
            table.settings.status_file.unlink(missing_ok=True)

    asyncio.run(serve())


@nac_group.command("status")
@click.option(
    "--table",
    "table_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The running controller's table: its status_file, else its status host and port.",
)
@click.option("--url", default=None, help="Its status side (default http://127.0.0.1:5890).")
@click.option("--json", "as_json", is_flag=True, help="The status as JSON.")
def status_command(table_file: Path | None, url: str | None, as_json: bool) -> None:
    """Each line's state and counts, each host's, the routing misses."""
    if url is None and table_file is not None:
        settings = _load(table_file).settings
        url = f"http://{settings.status_host}:{settings.status_port}"
        if settings.status_file is not None:
            try:
                url = settings.status_file.read_text().strip()
            except OSError:
                raise click.ClickException(
                    f"{settings.status_file}: not there (is `medswitch nac run` running?)"
                ) from None
    url = url or "http://127.0.0.1:5890"
    target = f"{url.rstrip('/')}/status"
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            status: dict[str, Any] = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise click.ClickException(f"{target}: {error}") from None
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
        return
    for line in status["lines"]:
        failures = " ".join(f"{k}={v}" for k, v in sorted(line["failures"].items())) or "-"
        calls = " ".join(f"{k}={v}" for k, v in sorted(line["calls"].items())) or "-"
        click.echo(
            f"line {line['name']}: {line['state']}, calls {calls}, connected "
            f"{line['connected_s']:.1f} s, frames in {line['frames']['in']} out "
            f"{line['frames']['out']}, bytes in {line['bytes']['in']} out "
            f"{line['bytes']['out']}, failures {failures}"
        )
    for host in status["hosts"]:
        failures = " ".join(f"{k}={v}" for k, v in sorted(host["failures"].items())) or "-"
        click.echo(
            f"host {host['host']}: {'up' if host['up'] else 'down'}, requests "
            f"{host['requests']}, answers {host['answers']}, unmatched {host['unmatched']}, "
            f"failures {failures}"
        )
    misses = status["routing_misses"]
    click.echo(
        "routing misses: "
        + (" ".join(f"NII {k}={v}" for k, v in sorted(misses.items())) if misses else "none")
    )

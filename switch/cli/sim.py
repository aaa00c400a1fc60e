"""`medswitch sim`: simulators of the network's counterparties. `sim his` plays a hospital's
charging system against the HIS API."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import aiohttp
import click

from ledger.medical.catalogue import parse_catalogue
from ledger.medical.recordfile import MedicalFileError
from ledger.medical.split import yuan
from simulators.his import HisClient, Summary, simulate
from switch.cli.common import load_config
from switch.cli.status import ANY_ADDRESS
from switch.config import Config


def his_url(config: Config) -> str:
    """Where the configured daemon serves the HIS API: its own port when ``[his] port`` is set
    (HTTPS with its certificate), else the HTTP port."""
    his, http = config.his, config.http  # both ports bind http.host
    port = http.port if his.port is None else his.port
    scheme = "https" if his.port is not None and his.tls_cert and his.tls_key else "http"
    return f"{scheme}://{'127.0.0.1' if http.host in ANY_ADDRESS else http.host}:{port}"


BILLS_LISTED = 20  # bills listed one per line, at most


@click.command("his")
@click.option(
    "--url",
    default=None,
    help="The HIS API (default: the configuration's `his.port`, else its `http.port`, on"
    " 127.0.0.1 when the daemon binds every address).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file the default URL is read from (default $MEDSWITCH_HOME/medswitch.toml).",
)
@click.option("--institution", required=True, help="The institution id (HTTP Basic user).")
@click.option(
    "--token",
    envvar="MEDSWITCH_HIS_TOKEN",
    required=True,
    help="The institution's HIS token (env MEDSWITCH_HIS_TOKEN).",
)
@click.option(
    "--catalogue",
    "catalogue_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A catalogue file as the centre publishes it.",
)
@click.option("--card", "cards", multiple=True, required=True, help="A card number (repeat).")
@click.option("--count", default=10, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cancel-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--date",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Service date (default: today).",
)
def sim_his(
    url: str | None,
    config_path: Path | None,
    institution: str,
    token: str,
    catalogue_file: Path,
    cards: tuple[str, ...],
    count: int,
    seed: int,
    cancel_rate: float,
    concurrency: int,
    day: dt.datetime | None,
) -> None:
    """Build realistic bills from the catalogue and submit them to the HIS API."""
    if url is None:
        url = his_url(load_config(config_path))
    try:
        catalogue = parse_catalogue(catalogue_file.read_bytes())
    except MedicalFileError as error:
        raise click.ClickException(f"{catalogue_file}: {error}") from None
    service_day = day.date() if day else dt.date.today()

    async def run() -> Summary:
        async with aiohttp.ClientSession() as session:
            client = HisClient(session, url, institution, token)
            return await simulate(
                client,
                catalogue,
                cards,
                count,
                seed=seed,
                day=service_day,
                cancel_rate=cancel_rate,
                concurrency=concurrency,
            )

    try:
        summary = asyncio.run(run())
    except aiohttp.ClientError as error:
        raise click.ClickException(f"{url}: {error}") from None
    click.echo(
        f"submitted {summary.submitted}, cancelled {summary.cancelled}, refused "
        f"{sum(summary.refused.values())} {dict(sorted(summary.refused.items()))}"
    )
    for bill_id in summary.bill_ids[:BILLS_LISTED]:  # what a POS settles: bill id and total
        click.echo(f"bill {bill_id} total_fen {summary.totals_fen[bill_id]}")
    click.echo(
        f"total {yuan(summary.total_fen)}: personal account "
        f"{yuan(summary.personal_account_fen)}, pooled {yuan(summary.pooled_fen)}, "
        f"self-pay {yuan(summary.self_pay_fen)}"
    )

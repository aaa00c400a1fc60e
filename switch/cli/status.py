"""`medswitch status`: the running daemon's one-screen answer to "is the centre healthy and is
any money at risk", read from its ``/status`` (switch/observe_http.py) on the configured HTTP
port (loopback, or with ``http.status_token``).

Exit status: 0 all well, 1 something needs attention (listed under "attention"), 2 the daemon
did not answer.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from switch.cli.common import load_config

ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


@click.command("status")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file (default $MEDSWITCH_HOME/medswitch.toml).",
)
@click.option("--url", default=None, help="The daemon's HTTP side (default: from the config).")
@click.option("--json", "as_json", is_flag=True, help="Print /status's JSON as it came.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 300))
def status(config_path: Path | None, url: str | None, as_json: bool, timeout: float) -> None:
    """The running daemon's health and money at risk: terminals, bank links, SAF, loads in
    doubt, review queue, day-end, ledger writer (exit 1 when something needs attention)."""
    token = ""
    if url is None:
        http = load_config(config_path).http
        host = "127.0.0.1" if http.host in ANY_ADDRESS else http.host
        url = f"http://{host}:{http.port}"
        token = http.status_token
    target = f"{url.rstrip('/')}/status"
    request = urllib.request.Request(target)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read() or b"{}"
        try:
            detail = json.loads(body).get("error", {}).get("message", err.reason)
        except (ValueError, AttributeError):
            detail = err.reason
        click.echo(f"error: {target}: {err.code} {detail}", err=True)
        sys.exit(2)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        click.echo(f"error: {target}: the daemon did not answer ({reason})", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(answer, indent=1, sort_keys=True))
    else:
        click.echo("\n".join(screen(answer)))
    sys.exit(1 if answer.get("attention") else 0)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def screen(status: dict[str, Any]) -> list[str]:
    """The lines `medswitch status` prints for a /status answer."""
    read_at = dt.datetime.fromtimestamp(status["read_at_us"] / 1e6, dt.UTC)
    lines = [
        f"medswitch {status['version']} (worker {status['worker']} of {status['workers']}),"
        f" read {read_at:%Y-%m-%d %H:%M:%S} UTC",
        "",
    ]
    terminals = status["terminals"]
    signed = terminals["signed_on"]
    lines.append(
        f"terminals      {sum(signed.values())} signed on, {terminals['connections']}"
        " connections to this worker"
    )
    lines += [f"  {institution:<20} {count} signed on" for institution, count in signed.items()]
    links = status["bank_links"]
    if not links:
        lines.append("bank links     none configured")
    for link in links:
        signed_on = link["signed_on"]
        sides = ", ".join(
            f"{side} {'signed on' if value else 'not signed on'}"
            for side, value in signed_on.items()
            if value is not None
        )
        lines.append(
            f"bank {link['bank']:<9} outbound {'up' if link['outbound_up'] else 'DOWN'},"
            f" inbound {link['inbound_connections']} connections" + (f"; {sides}" if sides else "")
        )
    saf = status["saf"]
    if not saf:
        lines.append("SAF            empty")
    for bank, queue in saf.items():
        lines.append(
            f"SAF {bank:<10} {queue['depth']} reversals waiting, oldest"
            f" {_age(queue['oldest_age_s'])}"
        )
    doubt = status["loads_in_doubt"]
    if doubt["count"]:
        lines.append(
            f"loads in doubt {doubt['count']} ({_yuan(doubt['fen'])} yuan), oldest"
            f" {_age(doubt['oldest_age_s'])}" + (" (at least)" if doubt["capped"] else "")
        )
    else:
        lines.append("loads in doubt none")
    review = status["review_queue"]
    total = sum(review.values())
    ages = status.get("review_oldest_age_s", {})
    detail = ", ".join(
        f"{reason} {count}" + (f" (oldest {_age(ages[reason])})" if reason in ages else "")
        for reason, count in review.items()
    )
    lines.append(f"review queue   {total} open" + (f": {detail}" if detail else ""))
    dayend = status["dayend"]
    lines.append(
        f"day-end        {dayend['business_date']} {dayend['state']}"
        f" (cut-over {_age(dayend['cutover_age_s'])} ago)"
    )
    lines.append(f"ledger writer  {status['ledger_writer']}")
    lines.append("")
    attention = status["attention"]
    if attention:
        lines.append("attention:")
        lines += [f"  - {line}" for line in attention]
    else:
        lines.append("all well")
    return lines

"""`medswitch sim bank`: a bank host simulator, both sides of the link (simulators/bank.py);
`medswitch bank key-change`: the running daemon changes a bank link's zone keys now, asked by a
logged-in key custodian (the login's token, `switch.cli.auth`, sent as ``Bearer``).

    medswitch sim bank acquirer --card 6212340000000016 --reader "Virtual PCD 00 00" \\
        --script counter.txt -c custodians/a.component -c custodians/b.component
    medswitch sim bank issuer --port 5811 --decline-above 500000

The acquirer plays a bank's counters against the switch's inbound bank link (`[bank]` in
medswitch.toml): it signs on and runs the script's steps (``sign_on``, ``echo``, ``inquiry
CARD``, ``load CARD FEN``, ``unload CARD FEN``, ``loss_report CARD``, ``unloss CARD``) with the
card in the PC/SC reader. The link's ZAK comes from the key home (the bank's copy of the key;
in the demo the switch's own TEST ONLY key home, where `medswitch keys --home var/demo generate
bank/01020000/ZAK --usage ZAK -c …/a.component -c …/b.component` makes it). The issuer
answers savings debits by rule and prints one JSON line per request it received (card numbers
masked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

import click

from hsm.keys import KeyUsage
from messages.pretty import mask_pan
from simulators.bank import (
    BankAcquirer,
    BankIssuer,
    BankKeys,
    IssuerRules,
    Received,
    run_script,
)
from switch.card_io.connection import CardConnection, CardConnectionError, PcscConnection
from switch.cli.common import (
    component_count_option,
    component_files_option,
    home_option,
    load_hsm,
    resolve,
)
from switch.key_home import Home


@click.group("bank")
def bank_sim() -> None:
    """A bank host: counters (acquirer) and savings accounts (issuer)."""


def _key_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            home_option(help="Key home holding the link's ZAK."),
            click.option("--zak", "zak_alias", default="bank/01020000/ZAK", show_default=True),
            click.option("--acquirer", "acquirer_id", default="01020000", show_default=True),
            component_files_option,
            component_count_option,
        ]
    ):
        function = option(function)
    return function


@bank_sim.command("acquirer")
@_key_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5810, show_default=True, type=click.IntRange(1, 65535))
@click.option("--card", "card_no", default=None, help="The card number of the card in the reader.")
@click.option("--reader", default=None, help="PC/SC reader holding the card.")
@click.option("--pin", default="123456", show_default=True, help="The cardholder's PIN (VERIFY).")
@click.option("--counter", "counter_id", default="C0000001", show_default=True)
@click.option(
    "--script",
    "script",
    type=click.File("r"),
    default="-",
    show_default=True,
    help="Steps, one per line (default: standard input).",
)
@click.pass_context
def acquirer(
    ctx: click.Context,
    home: Path,
    zak_alias: str,
    acquirer_id: str,
    component_files: tuple[Path, ...],
    count: int,
    host: str,
    port: int,
    card_no: str | None,
    reader: str | None,
    pin: str,
    counter_id: str,
    script: TextIO,
) -> None:
    """Send counter transactions to the switch's bank link, the card in READER."""
    lines: list[str] = list(script)
    hsm = load_hsm(Home(home, "bank-sim"), component_files, count)
    cards: dict[str, tuple[CardConnection, str]] = {}
    if card_no is not None and reader is not None:
        connect = ctx.ensure_object(dict).get("connect", PcscConnection)
        conn: CardConnection = connect(reader)
        try:
            conn.connect()
        except CardConnectionError as error:
            raise click.ClickException(f"reader {reader}: {error}") from None
        cards[card_no] = (conn, pin)

    async def run() -> list[str]:
        zak = await resolve(Home(home, "bank-sim"), zak_alias)
        if zak.usage is not KeyUsage.ZAK:
            raise click.ClickException(f"{zak_alias} is no ZAK")
        link = await BankAcquirer.connect(host, port, hsm, zak, acquirer_id, counter_id=counter_id)
        try:
            return await run_script(link, lines, cards)
        finally:
            await link.close()

    try:
        for result in asyncio.run(run()):
            click.echo(_masked(result))
    except (OSError, ConnectionError) as error:
        raise click.ClickException(f"{host}:{port}: {error}") from None
    except (ValueError, KeyError) as error:
        raise click.ClickException(f"script: {error}") from None


def _masked(line: str) -> str:
    return " ".join(mask_pan(w) if w.isdigit() and len(w) >= 13 else w for w in line.split())


@bank_sim.command("issuer")
@_key_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5811, show_default=True, type=click.IntRange(0, 65535))
@click.option("--decline-above", type=int, default=None, help="Decline (51) debits above FEN.")
@click.option("--delay-s", type=float, default=0.0, show_default=True)
@click.option("--drop", is_flag=True, help="Never answer a savings debit.")
@click.option(
    "--disconnect", is_flag=True, help="Debit, then drop the connection without answering."
)
@click.option(
    "--zmk",
    "zmk_alias",
    default=None,
    help="The link's ZMK in the key home: take the centre's key changes under it.",
)
@click.option(
    "--seconds", type=float, default=0.0, help="Stop after this long (default: on SIGTERM)."
)
def issuer(
    home: Path,
    zak_alias: str,
    acquirer_id: str,
    component_files: tuple[Path, ...],
    count: int,
    host: str,
    port: int,
    decline_above: int | None,
    delay_s: float,
    drop: bool,
    disconnect: bool,
    zmk_alias: str | None,
    seconds: float,
) -> None:
    """Answer the switch's savings debits and reversals by rule until stopped."""
    hsm = load_hsm(Home(home, "bank-sim"), component_files, count)
    rules = IssuerRules(decline_above, delay_s, drop, disconnect=disconnect)

    async def run() -> None:
        zak = await resolve(Home(home, "bank-sim"), zak_alias)
        zmk = await resolve(Home(home, "bank-sim"), zmk_alias) if zmk_alias else None
        keys = BankKeys(zak, zmk, prefix=f"bank-sim/{acquirer_id}")
        bank = BankIssuer(hsm, keys, rules, on_receive=_print_received)
        await bank.start(host, port)
        click.echo(f"bank issuer {acquirer_id} on {host}:{bank.port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds or None)
        await bank.close()

    asyncio.run(run())


def _print_received(received: Received) -> None:
    typed = received.typed
    record = {
        "key": received.message_key,
        "mti": received.mti,
        "repeat": received.repeat,
        "pan": mask_pan(typed.card_number() or ""),
        "amount_fen": getattr(typed, "amount_fen", None),
    }
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


@click.group("bank")
def bank_group() -> None:
    """The bank host links of the running daemon."""


@bank_group.command("key-change")
@click.option("--bank", "bank_id", required=True, help="The bank (its acquirer id, F32).")
@click.option(
    "--url",
    default=None,
    help="The daemon's HTTP side (default: http://[http] host:port of the configuration).",
)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600))
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The key custodian's login token (env MEDSWITCH_OPERATOR_TOKEN_FILE, default "
              "$MEDSWITCH_HOME/operators/<login user>.token).")
def key_change(bank_id: str, url: str | None, timeout: float, token_file: Path | None) -> None:
    """Change the outbound link's zone keys now: new ZAK, ZPK and file key under the link's
    ZMK, taken by the bank (its KCVs checked) before the daemon uses them. Run by a logged-in
    key custodian (`medswitch operators login NAME`); the daemon's audit log records them."""
    from switch.cli.auth import TOKEN_FILE_ENV
    from switch.cli.auth import token_file as token_path

    path = token_path(token_file)
    try:
        token = path.read_text().strip()
    except OSError:
        raise click.ClickException(
            f"no operator logged in (no token file {path}): run `medswitch operators login "
            f"NAME` or set {TOKEN_FILE_ENV}"
        ) from None
    if url is None:
        from switch.config import ConfigError, load

        try:
            http = load().http
        except ConfigError as err:
            raise click.ClickException(f"configuration: {err}") from None
        url = f"http://{http.host}:{http.port}"
    target = f"{url.rstrip('/')}/bank/{bank_id}/key-change"
    request = urllib.request.Request(
        target, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = json.loads(err.read() or b"{}").get("error", err.reason)
        raise click.ClickException(f"key change refused: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise click.ClickException(f"{target}: {err}") from None
    click.echo(f"bank {answer['bank']}: keys changed, new ZAK KCV {answer['zak_kcv']}")

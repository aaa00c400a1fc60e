"""`medswitch sim pos` and `medswitch sim kiosk`: the network's terminals (simulators/pos.py,
simulators/kiosk.py), scriptable and interactive.

    medswitch sim pos --terminal-id P0000001 --institution 101320000000001 \\
        --tmk-component tmk.a --tmk-component tmk.b --card card.json --psam psam.json \\
        --pan 3100000000000001 --state pos.json --script day.txt
    medswitch sim kiosk --terminal-id K0000001 --home var/demo -c a.component -c b.component \\
        --card card.json --pan 3100000000000001 --state kiosk.json

The terminal's TMK: its clear components as the key-loading device injects them
(``--tmk-component``, repeat), or ``tmk/<terminal id>`` in a key home (``--home`` with the LMK's
``-c`` files). The card (and the POS's PSAM): a virtual card's JSON file (``--card``) or a PC/SC
reader (``--card-reader``). A script has one command per line (``#`` starts a comment); with no
script the terminal prompts for commands on the screen.

POS commands: sign_on · params · blacklist · settle BILL_ID TOTAL_FEN (self-pay in cash) ·
settle_ep BILL_ID TOTAL_FEN (self-pay from the card's EP) · purchase FEN / purchase_ep FEN (no
bill: online, or offline through the PSAM when the centre is unreachable) · offline FEN /
offline_ep FEN (offline at once) · void BILL_ID · settle_batch · records. Kiosk commands:
sign_on · insert · balance · history · load FEN · load_lost FEN (the card is credited, the
confirmation never sent) · ep_load FEN (from bank savings: the bank PIN under the session PIK) ·
ep_load_lost FEN · recover.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from hsm.des import kcv
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from messages.line_framing import LineFraming
from simulators import pos_records, pos_signatures
from simulators.card import VirtualCard
from simulators.dial_link import Dial
from simulators.kiosk import Kiosk
from simulators.pos import Pos
from simulators.psam import VirtualPsam
from simulators.terminal_link import (
    Endpoint,
    TerminalLink,
    TerminalState,
    yuan,
)
from switch.card_io.connection import (
    CardConnection,
    CardConnectionError,
    DirectConnection,
    PcscConnection,
)
from switch.cli.common import component_count_option, component_files_option, load_hsm
from switch.cli.common import resolve as resolve_key
from switch.cli.sim_script import Command, Step, parse_script, prompted, run_steps
from switch.key_home import Home, component_files_of


def ephemeral_module(files: tuple[Path, ...]) -> tuple[SoftHsm, list[Component]]:
    """A terminal's secure module: a fresh random LMK, the TMK injected from its components."""
    lmk_parts = [Component(secrets.token_bytes(16)) for _ in range(2)]
    hsm = SoftHsm(Lmk(lmk_parts, kcv(combine(lmk_parts))), MemoryKeyStore())
    try:
        return hsm, component_files_of(files)
    except Exception as error:
        raise click.ClickException(f"TMK component: {error}") from None


def connection(
    file: Path | None, reader: str | None, what: str, psam: bool = False
) -> CardConnection:
    conn: CardConnection
    if file is not None:
        try:
            device: Any = VirtualPsam.load(file) if psam else VirtualCard.load(file)
        except (OSError, ValueError, KeyError) as error:
            raise click.ClickException(f"{file}: {error}") from None
        conn = DirectConnection(device, f"virtual {what}")
    elif reader is not None:
        conn = PcscConnection(reader)
    else:
        raise click.UsageError(f"give the {what} as --{what} FILE or --{what}-reader NAME")
    try:
        conn.connect()
    except CardConnectionError as error:
        raise click.ClickException(str(error)) from None
    return conn


def terminal_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--port", default=5800, show_default=True, type=click.IntRange(1, 65535)),
        click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 300)),
        click.option(
            "--dial",
            default=None,
            metavar="NUMBER",
            help="Dial NUMBER through the modem on --modem instead of TCP (specs/dialup.md).",
        ),
        click.option(
            "--modem",
            default=None,
            metavar="PORT",
            help="The modem's serial port: a device, or an access controller's pty line.",
        ),
        click.option(
            "--framing",
            default="cup",
            show_default=True,
            type=click.Choice(["cup", "stx"]),
            help="The dial line's framing.",
        ),
        click.option("--terminal-id", required=True, help="The terminal's id (field 41)."),
        click.option("--institution", default="centre", show_default=True, help="Field 42."),
        click.option(
            "--tmk-component",
            "tmk_files",
            multiple=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A clear TMK component file as injected (repeat).",
        ),
        click.option(
            "--home",
            default=None,
            type=click.Path(file_okay=False, path_type=Path),
            help="A key home holding tmk/<terminal id> (with -c LMK components).",
        ),
        component_files_option,
        component_count_option,
        click.option(
            "--state",
            "state_file",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="The terminal's records (JSON, kept across restarts).",
        ),
        click.option(
            "--card",
            "card_file",
            default=None,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A virtual card's JSON file.",
        ),
        click.option("--card-reader", default=None, help="A PC/SC reader with the card."),
        click.option("--pan", required=True, help="The card number (as the HIS knows it)."),
        click.option("--pin", default="123456", show_default=True, help="The cardholder's PIN."),
        click.option(
            "--script",
            "script",
            default=None,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="One command per line; prompts on the screen when absent.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass
class Common:
    host: str
    port: int
    timeout: float
    dial: str | None
    modem: str | None
    framing: str
    terminal_id: str
    institution: str
    tmk_files: tuple[Path, ...]
    home: Path | None
    component_files: tuple[Path, ...]
    count: int
    state_file: Path
    card_file: Path | None
    card_reader: str | None
    pan: str
    pin: str
    script: Path | None


async def open_link(common: Common) -> TerminalLink:
    now = datetime.now().replace(microsecond=0)
    tmk: KeyRef
    if common.tmk_files:
        hsm, parts = ephemeral_module(common.tmk_files)
        tmk = await hsm.form_key(f"tmk/{common.terminal_id}", KeyUsage.TMK, parts, now=now)
    elif common.home is not None:
        home = Home(common.home, f"terminal {common.terminal_id}")
        hsm = load_hsm(home, common.component_files, common.count)
        tmk = await resolve_key(home, f"tmk/{common.terminal_id}")
    else:
        raise click.UsageError("give the TMK: --tmk-component FILE (repeat) or --home with -c")
    state = TerminalState.open(common.state_file)
    endpoint: Endpoint | Dial = Endpoint(common.host, common.port, common.timeout)
    if common.dial is not None:
        if common.modem is None:
            raise click.UsageError("--dial needs the modem's port: --modem PORT")
        endpoint = Dial(common.modem, common.dial, LineFraming(common.framing), common.timeout)
    return TerminalLink(endpoint, common.terminal_id, common.institution, hsm, tmk, state)


def run_session(
    common: Common, commands: Callable[[TerminalLink], dict[str, Command]], title: str
) -> None:
    probe = commands_for_parsing(commands)
    steps = parse_script(common.script, probe) if common.script else None

    async def main() -> int:
        link = await open_link(common)
        try:
            table = commands(link)
            if steps is not None:
                bound = [Step(s.line_no, table[s.command.name], s.args) for s in steps]
                return await run_steps(bound, stop_on_error=True)
            return await run_steps(prompted(table, title), stop_on_error=False)
        finally:
            await link.close()

    failures = asyncio.run(main())
    if steps is not None and failures:
        raise SystemExit(1)


def commands_for_parsing(
    commands: Callable[[TerminalLink], dict[str, Command]],
) -> dict[str, Command]:
    """The command table's names and arguments, for checking a script before connecting."""

    class Nothing:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError("only for parsing")

    return commands(Nothing())  # type: ignore[arg-type]


@click.command("pos")
@terminal_options
@click.option(
    "--psam",
    "psam_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A virtual PSAM's JSON file.",
)
@click.option("--psam-reader", default=None, help="A PC/SC reader with the PSAM.")
@click.option(
    "--card-sign-key",
    "card_sign_keys",
    multiple=True,
    metavar="VERSION:FILE",
    help="The centre's published card signing key of that version (the PEM `medswitch keys "
    "public-key centre/CARD_SIGN` wrote; repeat for older versions): `book` checks the card's "
    "holder and health data against it.",
)
def sim_pos(
    psam_file: Path | None,
    psam_reader: str | None,
    card_sign_keys: tuple[str, ...],
    **options: Any,
) -> None:
    """A hospital/pharmacy POS with its PSAM: sign-on, bills, offline purchases, batch."""
    common = Common(**options)
    try:
        published = [pos_signatures.load_published_key(spec) for spec in card_sign_keys]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--card-sign-key") from None
    state: dict[str, Pos] = {}

    def pos_of(link: TerminalLink) -> Pos:
        if "pos" not in state:
            card = connection(common.card_file, common.card_reader, "card")
            psam = connection(psam_file, psam_reader, "psam", psam=True)
            state["pos"] = Pos(link, card, psam, pan=common.pan, pin=common.pin)
        return state["pos"]

    def table(link: TerminalLink) -> dict[str, Command]:
        async def records(_: list[str]) -> list[str]:
            rows = link.state.records
            lines = [f"batch {link.state.batch}: {len(rows)} record(s)"]
            for row in rows:
                kind = "online" if row.get("online") else "offline"
                flags = " voided" if row["voided"] else ""
                purse = row.get("purse", "ED")
                lines.append(f"  {row['at']} {kind} {purse} {yuan(row['amount_fen'])}{flags}")
            return lines

        def pos() -> Pos:  # the card and the PSAM open on first use
            return pos_of(link)

        commands = (
            Command("sign_on", (), lambda a: pos().sign_on()),
            Command("params", (), lambda a: _lines(pos().download_parameters())),
            Command("blacklist", (), lambda a: _lines(pos().download_blacklist())),
            Command("settle", ("BILL_ID", "TOTAL_FEN"), lambda a: pos().settle(a[0], int(a[1]))),
            Command(
                "settle_ep",
                ("BILL_ID", "TOTAL_FEN"),
                lambda a: pos().settle(a[0], int(a[1]), self_pay="ep"),
            ),
            Command(
                "settle_cash",
                ("BILL_ID", "TOTAL_FEN"),
                lambda a: pos().settle(a[0], int(a[1]), personal="cash"),
            ),
            Command(
                "settle_visit",
                ("BILL_ID", "TOTAL_FEN", "DEPARTMENT", "ICD10_CODES"),
                lambda a: pos().settle(a[0], int(a[1]), visit=(a[2], tuple(a[3].split(",")))),
            ),
            Command("book", (), lambda a: pos_records.book(pos().card, pos().pin, published)),
            Command("emergency", (), lambda a: pos_records.emergency_lines(pos().card)),
            Command("purchase", ("FEN",), lambda a: pos().purchase(int(a[0]))),
            Command("purchase_ep", ("FEN",), lambda a: pos().purchase(int(a[0]), "ep")),
            Command("offline", ("FEN",), lambda a: pos().offline(int(a[0]))),
            Command("offline_ep", ("FEN",), lambda a: pos().offline(int(a[0]), "ep")),
            Command("void", ("BILL_ID",), lambda a: pos().void(a[0])),
            Command("settle_batch", (), lambda a: pos().settle_batch()),
            Command("records", (), records),
        )
        return {c.name: c for c in commands}

    run_session(common, table, f"POS {common.terminal_id}")


@click.command("kiosk")
@terminal_options
@click.option("--bank-pin", default=None, help="The savings account's PIN (default: --pin).")
def sim_kiosk(bank_pin: str | None, **options: Any) -> None:
    """A self-service kiosk: PIN, balances, ED load from the personal fund, EP load from bank
    savings, torn-load recovery."""
    common = Common(**options)
    state: dict[str, Kiosk] = {}

    def kiosk_of(link: TerminalLink) -> Kiosk:
        if "kiosk" not in state:
            card = connection(common.card_file, common.card_reader, "card")
            state["kiosk"] = Kiosk(link, card, pan=common.pan, pin=common.pin, bank_pin=bank_pin)
        return state["kiosk"]

    def table(link: TerminalLink) -> dict[str, Command]:
        async def insert(_: list[str]) -> list[str]:
            return kiosk_of(link).insert()

        commands = (
            Command("sign_on", (), lambda a: kiosk_of(link).sign_on()),
            Command("insert", (), insert),
            Command("balance", (), lambda a: kiosk_of(link).balance()),
            Command("history", (), lambda a: kiosk_of(link).history()),
            Command("load", ("FEN",), lambda a: kiosk_of(link).load(int(a[0]))),
            Command(
                "load_lost",
                ("FEN",),
                lambda a: kiosk_of(link).load(int(a[0]), lose_confirmation=True),
            ),
            Command("ep_load", ("FEN",), lambda a: kiosk_of(link).ep_load(int(a[0]))),
            Command(
                "ep_load_lost",
                ("FEN",),
                lambda a: kiosk_of(link).ep_load(int(a[0]), lose_confirmation=True),
            ),
            Command("recover", (), lambda a: kiosk_of(link).recover()),
        )
        return {c.name: c for c in commands}

    run_session(common, table, f"kiosk {common.terminal_id}")


async def _lines(line: Awaitable[str]) -> list[str]:
    return [await line]

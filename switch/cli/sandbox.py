"""The demo's sandbox — TEST ONLY: what a vendor or a new user needs to drive `make run`'s
daemon with the simulators or their own terminal, written beside the database in
``$MEDSWITCH_HOME/sandbox/``.

- ``terminals.json`` and ``tmk/<terminal>.{a,b}``: for the sandbox terminals (the first two POS
  of the first hospital, with their PSAMs, and kiosk K0000001) the TMK as two clear components
  with their check values, as a key ceremony hands them to a key-loading device; the TMK is
  formed in the centre's HSM from exactly these components (``form_key``).
- ``cards/<card number>.json``: virtual card images of the first cardholders, personalised
  with the centre's card master keys through the HSM (as ``cards personalize`` writes a card in a
  reader), the first with demo health data (``sandbox_book``). PIN 123456. A card image holds
  its diversified keys in clear — as the chip does — so a vendor's own card model can compute
  MAC1/TAC from it. TEST ONLY: never a real card.
- ``psams/<terminal>.json``: the POS terminals' PSAM images, with their terminal numbers.
- ``catalogue.txt``: the catalogue file, MACed under the sandbox's catalogue FILE key.
- ``his-credentials.txt`` (in the home): the HIS user and token of every hospital.
- ``his-examples.json``: ready HIS API requests for the first card, each with its answer
  (`switch.cli.sandbox_his`; specs/his-api.yaml, "Sandbox").
- ``README.txt``: the quick-start, also printed by ``medswitch demo sandbox``.

Card numbers are shown in full here: these are TEST ONLY cards of a demo deployment, not
cardholder data (the switch masks PANs everywhere else).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click

from hsm.des import adjust_parity
from hsm.keys import KeyRef, KeyUsage
from hsm.lmk import Component
from hsm.soft import SoftHsm
from ledger.medical.catalogue import build_catalogue
from ledger.medical.filemac import seal
from messages.card_records import HealthData
from simulators.card import VirtualCard
from simulators.card.factory import blank_card, blank_psam
from simulators.psam import VirtualPsam
from switch.card_io import personalize as perso
from switch.card_io.connection import DirectConnection
from switch.card_io.record_book import write_health
from switch.cli import sandbox_book, sandbox_his
from switch.demo import keys as demo_keys
from switch.demo import medical as demo_medical
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from switch.sessions import tmk_alias

if TYPE_CHECKING:
    from switch.config import Config

SANDBOX = "sandbox"
POS_COUNT = 2
KIOSK = "K0000001"
CARD_COUNT = 3
CARD_PIN = "123456"  # the factory PIN the sandbox cards keep
CATALOGUE_KEY = "sandbox/catalogue"
FACTORY_CONTROL = "factory/MK_CONTROL"
FACTORY_TRANSPORT = "factory/PSAM_TRANSPORT"
CENTRE_ZONE = "Asia/Shanghai"  # the demo centre's (its quick-start's day-end date is too)
TEST_ONLY = "TEST ONLY — sandbox of a demo deployment; never for production"
U = KeyUsage


@dataclass(frozen=True, slots=True)
class SandboxTerminal:
    terminal_id: str
    kind: str  # pos | kiosk
    institution: str
    psam_serial: str | None
    psam_terminal_no: str | None


@dataclass(frozen=True, slots=True)
class SandboxCard:
    card_no: str
    application_serial: str  # as the centre lists it (8 bytes, hex)
    cardholder_id: str
    personal_fund_fen: int


def sandbox_dir(home: Path) -> Path:
    return home / SANDBOX


def _terminals(database: Path) -> list[SandboxTerminal]:
    with sqlite3.connect(database) as db:
        hospital = db.execute(
            "SELECT id FROM institutions WHERE kind = 'hospital' ORDER BY id LIMIT 1"
        ).fetchone()[0]
        rows = db.execute(
            "SELECT t.id, p.serial, p.psam_terminal_no FROM terminals t JOIN psams p "
            "ON p.terminal_id = t.id WHERE t.institution_id = ? AND t.kind = 'pos' "
            "ORDER BY t.id LIMIT ?",
            (hospital, POS_COUNT),
        ).fetchall()
    found = [SandboxTerminal(r[0], "pos", hospital, r[1], r[2]) for r in rows]
    return [*found, SandboxTerminal(KIOSK, "kiosk", "centre", None, None)]


def sandbox_cards(database: Path) -> list[SandboxCard]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT c.card_no, c.application_serial, c.cardholder_id, "
            "COALESCE(a.credits_posted - a.debits_posted, 0) FROM cards c "
            "LEFT JOIN accounts a ON a.kind = 'pf' AND a.owner = c.cardholder_id "
            "ORDER BY c.application_serial LIMIT ?",
            (CARD_COUNT,),
        ).fetchall()
    return [SandboxCard(r[0], r[1], r[2], int(r[3])) for r in rows]


def _component_file(path: Path, component: Component) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{component.reveal()}\nKCV:{component.kcv}\n# {TEST_ONLY}\n")
    path.chmod(0o600)


async def _form_tmk(hsm: SoftHsm, out: Path, terminal_id: str, now: dt.datetime) -> KeyRef:
    files = [out / "tmk" / f"{terminal_id}.{part}" for part in ("a", "b")]
    if not all(f.exists() for f in files):
        for file in files:
            _component_file(file, Component(adjust_parity(secrets.token_bytes(16))))
    return await hsm.form_key(tmk_alias(terminal_id), U.TMK, component_files_of(files), now=now)


async def _key(home: Home, hsm: SoftHsm, alias: str, usage: U, value: str | None,
               now: dt.datetime) -> KeyRef:
    found = await home.store.list(alias)
    if found:
        return found[-1].ref
    if value is None:
        return await hsm.generate_key(alias, usage, now=now)
    return await hsm.form_key(alias, usage, [Component(bytes.fromhex(value))], now=now)


async def _master_keys(home: Home) -> perso.CardMasterKeys:
    async def ref(alias: str) -> KeyRef:
        return await resolve(home, alias)

    card = {u: await ref(f"card/{u.value}") for u in demo_keys.CARD_MASTER_USAGES}
    return perso.CardMasterKeys(
        control=card[U.MK_CONTROL], load=card[U.MK_LOAD], purchase=card[U.MK_PURCHASE],
        tac=card[U.MK_TAC], unload=card[U.MK_UNLOAD], pin_reload=card[U.MK_PIN_RELOAD],
        pin_unblock=card[U.MK_PIN_UNBLOCK], app_maint=card[U.MK_APP_MAINT],
        data_check=await ref(demo_keys.centre_alias(U.DATA_CHECK)), version=1,
        record=card[U.MK_RECORD], signing=await ref(demo_keys.centre_alias(U.CARD_SIGN)),
    )


async def _write_card(hsm: SoftHsm, keys: perso.CardMasterKeys, factory: KeyRef,
                      card: SandboxCard, path: Path, health: HealthData | None) -> None:
    serial = bytes.fromhex(card.application_serial).rjust(10, b"\0")
    device = VirtualCard(blank_card(serial, pin=bytes.fromhex(CARD_PIN)), path=path)
    conn = DirectConnection(device, "sandbox card")
    conn.connect()
    public = bytes(10) + serial + bytes(10)
    await perso.personalize_card(conn, hsm, keys, serial, public, bytes(39),
                                 bytes(perso.AUTHORISATION_DATA_BYTES), None, factory)
    if health is not None:
        await write_health(conn, hsm, keys, serial, health)
    conn.disconnect()


async def _write_psam(hsm: SoftHsm, transport: KeyRef, purchase: KeyRef,
                      terminal: SandboxTerminal, path: Path) -> None:
    assert terminal.psam_serial is not None and terminal.psam_terminal_no is not None
    serial = bytes.fromhex(terminal.psam_serial).rjust(10, b"\0")
    device = VirtualPsam(blank_psam(serial), path=path)
    conn = DirectConnection(device, "sandbox PSAM")
    conn.connect()
    await perso.personalize_psam(conn, hsm, transport, purchase, serial,
                                 bytes.fromhex(terminal.psam_terminal_no), purchase.version)
    conn.disconnect()


async def _provision(home_path: Path, database: Path, now: dt.datetime) -> None:
    out = sandbox_dir(home_path)
    files = demo_keys.write_test_components(home_path)
    hsm = open_soft_hsm(home_path, component_files_of(files))
    home = Home(home_path, "sandbox")
    terminals = _terminals(database)
    listing = []
    for terminal in terminals:
        tmk = await _form_tmk(hsm, out, terminal.terminal_id, now)
        home.audit("key.form", alias=tmk.alias, usage="TMK", version=tmk.version, kcv=tmk.kcv,
                   test_only=True)
        parts = [f"tmk/{terminal.terminal_id}.{p}" for p in ("a", "b")]
        entry: dict[str, object] = {"terminal_id": terminal.terminal_id, "kind": terminal.kind,
                 "institution": terminal.institution, "tmk_components": parts,
                 "tmk_kcv": tmk.kcv}
        if terminal.psam_serial is not None:
            entry |= {"psam": f"psams/{terminal.terminal_id}.json",
                      "psam_serial": terminal.psam_serial,
                      "psam_terminal_no": terminal.psam_terminal_no}
        listing.append(entry)
    await demo_keys.provision(home_path, [])  # card masters and centre keys, when missing
    keys = await _master_keys(home)
    factory = await _key(home, hsm, FACTORY_CONTROL, U.MK_CONTROL,
                         perso.FACTORY_TEST_ONLY_CONTROL, now)
    transport = await _key(home, hsm, FACTORY_TRANSPORT, U.PSAM_TRANSPORT,
                           perso.FACTORY_TEST_ONLY_PSAM_TRANSPORT, now)
    for terminal in terminals:
        if terminal.psam_serial is not None:
            await _write_psam(hsm, transport, keys.purchase, terminal,
                              out / "psams" / f"{terminal.terminal_id}.json")
    cards = sandbox_cards(database)
    for index, card in enumerate(cards):  # the first with demo health data (sandbox_book)
        health = sandbox_book.demo_health(now) if index == 0 else None
        await _write_card(hsm, keys, factory, card, out / "cards" / f"{card.card_no}.json",
                          health)
        if health is not None:
            await sandbox_book.keep_copy(hsm, home, database, card.cardholder_id, health, now)
    catalogue_key = await _key(home, hsm, CATALOGUE_KEY, U.FILE, None, now)
    catalogue = demo_medical.catalogue_version(now)
    (out / "catalogue.txt").write_bytes(await seal(hsm, catalogue_key, build_catalogue(catalogue)))
    (out / "terminals.json").write_text(
        json.dumps({"test_only": TEST_ONLY, "terminals": listing,
                    "cards": [vars_of(c) for c in cards], "card_pin": CARD_PIN}, indent=1)
        + "\n"
    )


def vars_of(card: SandboxCard) -> dict[str, object]:
    return {"card_no": card.card_no, "application_serial": card.application_serial,
            "cardholder_id": card.cardholder_id, "image": f"cards/{card.card_no}.json",
            "personal_fund_fen": card.personal_fund_fen}


def his_token(home: Path, institution: str) -> str:
    for line in (home / demo_medical.CREDENTIALS_FILE).read_text().splitlines():
        user, _, token = line.partition(" ")
        if user == institution:
            return token
    raise click.ClickException(f"no HIS credential for {institution}")


def quick_start(home: Path, terminal_port: int, his_url: str) -> list[str]:
    """The quick-start's lines: each command works exactly as printed."""
    out = sandbox_dir(home)
    listing = json.loads((out / "terminals.json").read_text())
    pos = next(t for t in listing["terminals"] if t["kind"] == "pos")
    kiosk = next(t for t in listing["terminals"] if t["kind"] == "kiosk")
    card = listing["cards"][0]
    hospital = pos["institution"]
    token = his_token(home, hospital)
    common = f"--port {terminal_port} --pan {card['card_no']} --card {out / card['image']}"

    custodians = " ".join(f"-c {f}" for f in demo_keys.custodian_files(home))
    published = out / "centre-card-sign-v1.pem"  # the centre's public key, as published

    def tmk(terminal: dict[str, str]) -> str:
        return " ".join(f"--tmk-component {out / c}" for c in terminal["tmk_components"])

    return [
        f"# {TEST_ONLY}",
        f"# sandbox: {out}  (medswitch demo cards lists the cards)",
        "# 1. a HIS submits a bill for the card (prints the bill id and total):",
        f"medswitch sim his --url {his_url} --institution {hospital} "
        f"--token {token} --catalogue {out / 'catalogue.txt'} --card {card['card_no']} --count 1",
        "# 2. the kiosk loads the card's ED from the personal fund "
        "(type: sign_on, insert, load 20000, balance, quit):",
        f"medswitch sim kiosk --terminal-id {kiosk['terminal_id']} {tmk(kiosk)} "
        f"--state {out / 'kiosk-state.json'} {common}",
        "# 3. the POS settles the bill (type: sign_on, settle BILL_ID TOTAL_FEN, "
        "settle_batch, quit):",
        f"medswitch sim pos --terminal-id {pos['terminal_id']} --institution {hospital} "
        f"{tmk(pos)} --psam {out / pos['psam']} --state {out / 'pos-state.json'} {common}",
        "# 4. the day's end by the demo's maker, logged in first (TEST ONLY password), once"
        " the business date has closed (cut-over 23:00 centre time; before it the command"
        " says so):",
        f"echo demo-maker-password | MEDSWITCH_HOME={home} medswitch operators login demo-maker"
        f" --db {home / 'medswitch.db'}",
        f"MEDSWITCH_HOME={home} medswitch dayend run --date $(TZ=Asia/Shanghai date +%F) "
        f"--db {home / 'medswitch.db'} --keys-home {home} " + custodians,
        "# 5. the card's record book: the demo's key custodian (TEST ONLY password) publishes"
        " the centre's card signing key, the POS shows the emergency block without the PIN,"
        " then the book after it with the centre's signatures checked (type: emergency, book,"
        " quit); within 30 minutes of step 3 the hospital's HIS reads the centre's copy:",
        f"echo demo-custodian-password | MEDSWITCH_HOME={home} medswitch operators login"
        f" demo-custodian --db {home / 'medswitch.db'}",
        f"MEDSWITCH_HOME={home} medswitch keys public-key centre/CARD_SIGN {custodians}"
        f" > {published}",
        f"medswitch sim pos --terminal-id {pos['terminal_id']} --institution {hospital} "
        f"{tmk(pos)} --psam {out / pos['psam']} --state {out / 'pos-state.json'} {common} "
        f"--card-sign-key 1:{published}",
        f"curl -s -u {hospital}:{token} {his_url}/his/v1/cards/{card['card_no']}/book",
    ]


def provision(home: Path, database: Path, terminal_port: int, his_url: str) -> list[str]:
    """Write the sandbox when the home has none; returns the quick-start lines."""
    if not (sandbox_dir(home) / "terminals.json").exists():
        asyncio.run(_provision(home, database, dt.datetime.now(dt.UTC).replace(microsecond=0)))
    lines = quick_start(home, terminal_port, his_url)
    (sandbox_dir(home) / "README.txt").write_text("\n".join(lines) + "\n")
    today = dt.datetime.now(ZoneInfo(CENTRE_ZONE)).date()
    sandbox_his.write(sandbox_dir(home), database, his_url, today, TEST_ONLY)
    return lines


def his_url(config: Config) -> str:
    """Where the sandbox's HIS requests go: the [his] port when set (https with TLS), else the
    [http] port."""
    port = config.http.port if config.his.port is None else config.his.port
    return f"{'https' if config.his.tls_cert else 'http'}://127.0.0.1:{port}"


def _home_and_database() -> tuple[Path, Path, int, str]:
    from switch.config import ConfigError, load

    try:
        config = load()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    database = config.sqlite_path
    if not database.exists():
        raise click.ClickException(f"no database at {database}: run `medswitch run` first")
    return config.home_path.resolve(), database, config.terminal.port, his_url(config)


@click.command("sandbox")
def sandbox_command() -> None:
    """Write the TEST ONLY sandbox (terminal keys, card and PSAM images, catalogue) of the demo
    deployment in $MEDSWITCH_HOME when it has none, and print its quick-start."""
    home, database, terminal_port, url = _home_and_database()
    demo_medical.provision(home, database, dt.datetime.now(dt.UTC))
    for line in provision(home, database, terminal_port, url):
        click.echo(line)


@click.command("cards")
def cards_command() -> None:
    """The sandbox's TEST ONLY cards: card number (in full: test cards, not cardholder data),
    application serial, PIN, personal fund balance, card image."""
    home, database, _, _ = _home_and_database()
    out = sandbox_dir(home)
    if not (out / "terminals.json").exists():
        raise click.ClickException("no sandbox yet: medswitch demo sandbox (or medswitch run)")
    listing = json.loads((out / "terminals.json").read_text())
    click.echo(f"# {TEST_ONLY}")
    for card in sandbox_cards(database):
        click.echo(
            f"{card.card_no}  serial {card.application_serial}  PIN {listing['card_pin']}  "
            f"personal fund {card.personal_fund_fen / 100:,.2f} yuan  "
            f"{out / 'cards' / (card.card_no + '.json')}"
        )
    for terminal in listing["terminals"]:
        click.echo(
            f"{terminal['terminal_id']} {terminal['kind']} of {terminal['institution']}  "
            f"TMK KCV {terminal['tmk_kcv']}"
        )

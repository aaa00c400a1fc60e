"""Custodian key cards in `medswitch keys` (specs/key-ceremony.md §Custodian key cards): a
custodian's LMK or transport-key component written at the ceremony onto a PIN-protected smart
card (`keys key-card init`, `keys component --key-card READER`) and read only into the HSM
through PC/SC: anywhere a component file is taken (`-c`, `-k`), `key-card:READER` (or
`key-card:READER#SLOT`, slot 1 by default) reads it from the card in that reader after its
custodian's PIN, encrypted to a one-time key of the HSM side (`hsm.keycard`).

Tests stand a virtual card in for the reader by passing ``obj={"connect": factory}`` to the
CLI, as `medswitch cards` allows; otherwise the reader is a PC/SC reader (pyscard).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from hsm.keycard import ReadRequest, seal_for_card
from hsm.lmk import Component
from switch.card_io import keycard
from switch.card_io.connection import CardConnection, CardConnectionError, PcscConnection
from switch.key_home import Home, component_files_of, hsm_identity

PREFIX = "key-card:"
Connect = Callable[[str], CardConnection]


def is_key_card(source: Path) -> bool:
    return str(source).startswith(PREFIX)


def _where(source: Path) -> tuple[str, int]:
    reader, _, slot = str(source)[len(PREFIX):].partition("#")
    if slot and not slot.isdigit():
        raise click.ClickException(f"{source}: the slot after # is a number")
    return reader, int(slot or 1)


def _connect(reader: str) -> CardConnection:
    root = click.get_current_context().find_root().obj
    factory: Connect = root.get("connect", PcscConnection) if isinstance(root, dict) else (
        PcscConnection)
    conn = factory(reader)
    try:
        conn.connect()
        keycard.select(conn)
    except CardConnectionError as error:
        conn.disconnect()
        raise click.ClickException(f"key card in {reader}: {error}") from None
    return conn


def _pin(reader: str, confirm: bool = False) -> str:
    return str(click.prompt(f"PIN of the key card in {reader}", hide_input=True,
                            confirmation_prompt=confirm))


def read_sources(sources: Sequence[Path], home: Path | None) -> list[Component]:
    """Components from files and key cards (read for HOME's HSM), in the order given."""
    components = []
    for source in sources:
        if not is_key_card(source):
            components += component_files_of([source])
            continue
        reader, slot = _where(source)
        if home is None:
            raise click.ClickException("a key card is read only into the key home's HSM")
        identity = hsm_identity(home)
        conn = _connect(reader)
        try:
            card_status = keycard.status(conn)
            check = {s.slot: s.kcv for s in card_status.slots}.get(slot)
            if check is None:
                raise click.ClickException(f"key card in {reader}: no component in slot {slot}")
            if card_status.bound_to != identity.fingerprint:
                raise click.ClickException(f"key card in {reader} is bound to HSM "
                                           f"{card_status.bound_to}, not this one "
                                           f"({identity.fingerprint})")
            keycard.verify(conn, _pin(reader))
            request = ReadRequest(identity, slot)
            answer = keycard.read_component(conn, slot, request.data)
            components.append(request.open(keycard.public_key(conn), slot, answer, check))
        except CardConnectionError as error:
            raise click.ClickException(f"key card in {reader}: {error}") from None
        finally:
            conn.disconnect()
        click.echo(f"component read from the key card in {reader}, KCV {components[-1].kcv}")
    return components


def write_to_card(home: Home, reader: str, slot: int, label: str, custodian: str,
                  part: Component) -> None:
    """The component onto the custodian's card (after its PIN), sealed to the card's key."""
    conn = _connect(reader)
    try:
        keycard.verify(conn, _pin(reader))
        sealed = seal_for_card(keycard.public_key(conn), slot, part, secrets.token_bytes)
        keycard.write_component(conn, slot, label, sealed)
        written = {s.slot: s.kcv for s in keycard.status(conn).slots}.get(slot)
    except CardConnectionError as error:
        raise click.ClickException(f"key card in {reader}: {error}") from None
    finally:
        conn.disconnect()
    if written != part.kcv:
        raise click.ClickException(f"key card in {reader}: slot {slot} does not hold it")
    home.audit("keycard.write", custodian=custodian, reader=reader, slot=slot, label=label,
               kcv=part.kcv)


@click.group("key-card")
def key_card() -> None:
    """Custodians' key cards: PIN-protected smart cards holding their components."""


@key_card.command("init")
@click.option("--reader", required=True, help="The PC/SC reader holding the blank card.")
@click.option("--custodian", required=True, help="Whose card it is.")
@click.pass_obj
def init(home: Home, reader: str, custodian: str) -> None:
    """Bind a blank key card to this home's HSM and set its PIN (once; entered twice at a
    hidden prompt)."""
    identity = hsm_identity(home.path, create=True)
    conn = _connect(reader)
    try:
        keycard.initialise(conn, identity.public, _pin(reader, confirm=True))
    except CardConnectionError as error:
        raise click.ClickException(f"key card in {reader}: {error}") from None
    finally:
        conn.disconnect()
    home.audit("keycard.init", custodian=custodian, reader=reader, hsm=identity.fingerprint)
    click.echo(f"key card in {reader} is {custodian}'s, bound to HSM {identity.fingerprint}: "
               "PIN set")


@key_card.command("status")
@click.option("--reader", required=True)
def status_(reader: str) -> None:
    """PIN tries left and the components held (slot, label, KCV) — never a component."""
    conn = _connect(reader)
    try:
        found = keycard.status(conn)
    except CardConnectionError as error:
        raise click.ClickException(f"key card in {reader}: {error}") from None
    finally:
        conn.disconnect()
    state = "blocked" if found.tries_left == 0 else f"{found.tries_left} PIN tries left"
    bound = f", bound to HSM {found.bound_to}" if found.pin_set else ", blank"
    click.echo(f"key card in {reader}: {state}{bound}")
    for slot in found.slots:
        click.echo(f"slot {slot.slot}\t{slot.label}\tKCV {slot.kcv}")

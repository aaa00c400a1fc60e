"""`medswitch psams personalize`: a PSAM's terminal number and purchase key, bound to a
terminal in the ledger."""

from __future__ import annotations

import click
import sqlalchemy as sa

from hsm.keys import KeyUsage
from ledger import schema
from switch import card_personalize as perso
from switch.card_connection import CardConnectionError
from switch.cli_cards import (
    FACTORY_TRANSPORT_ALIAS,
    Context,
    pass_context,
    psams,
    run_hsm,
)
from switch.cli_keys import resolve

U = KeyUsage


@psams.command("personalize")
@click.option("--reader", required=True, help="PC/SC reader holding the blank PSAM.")
@click.option("--serial", required=True, help="The PSAM's serial (hex, 8 or 10 bytes).")
@click.option("--terminal-no", required=True, help="PSAM terminal number, 12 digits.")
@click.option("--institution", required=True, help="The institution owning the PSAM.")
@click.option("--terminal", default=None, help="Bind to this terminal (F41).")
@click.option("--key-version", default=1, show_default=True, type=int)
@pass_context
def psam_personalize(c: Context, reader: str, serial: str, terminal_no: str, institution: str,
                     terminal: str | None, key_version: int) -> None:
    """Terminal number, then the purchase master key under the PSAM's transport key; the
    PSAM recorded in the ledger, bound to its terminal."""
    if len(terminal_no) != 12 or not terminal_no.isdigit():
        raise click.ClickException("the PSAM terminal number is 12 digits")
    serial_bytes = bytes.fromhex(serial).rjust(10, b"\0")

    async def run() -> None:
        transport = await resolve(c.home, FACTORY_TRANSPORT_ALIAS)
        purchase = await resolve(c.home, f"card/{U.MK_PURCHASE.value}:{key_version}")
        conn = c.connect(reader)
        try:
            conn.connect()
            await perso.personalize_psam(conn, c.hsm, transport, purchase, serial_bytes,
                                         bytes.fromhex(terminal_no), key_version)
        except CardConnectionError as error:
            raise click.ClickException(f"PSAM {serial}: {error}") from None
        finally:
            conn.disconnect()

    run_hsm(run())
    with c.engine().begin() as db:
        db.execute(sa.insert(schema.psams).values(
            serial=serial_bytes.hex().upper(), psam_terminal_no=terminal_no,
            institution_id=institution, terminal_id=terminal, key_version=key_version))
    c.home.audit("psams.personalize", serial=serial_bytes.hex().upper(),
                 terminal_no=terminal_no, institution=institution, terminal=terminal)
    click.echo(f"PSAM {serial_bytes.hex().upper()}: terminal number {terminal_no}"
               + (f", bound to terminal {terminal}" if terminal else ""))

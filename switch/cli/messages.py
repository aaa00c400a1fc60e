"""`medswitch messages`: decode and show frames, PANs masked and secrets wiped."""

from __future__ import annotations

import sys

import click

from messages import bank, terminal_table
from messages.codec import Codec
from messages.errors import CodecError
from messages.framing import FrameDecoder, LengthFormat
from messages.pretty import pretty
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL

_INTERFACES = {
    "terminal": (TERMINAL, LengthFormat.BINARY2, terminal_table.row_of),
    "bank": (BANK, LengthFormat.ASCII4, bank.row_of),
}


@click.group()
def messages() -> None:
    """Decode ISO 8583 frames of the terminal and bank interfaces."""


@messages.command()
@click.argument("frame_hex", required=False)
@click.option(
    "--interface", type=click.Choice(sorted(_INTERFACES)), default="terminal", show_default=True
)
def decode(frame_hex: str | None, interface: str) -> None:
    """Show FRAME_HEX (or hex on stdin): length prefix included, one or more frames."""
    spec, length_format, row_of = _INTERFACES[interface]
    text = frame_hex if frame_hex is not None else sys.stdin.read()
    try:
        data = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise click.ClickException("input is not hexadecimal") from None
    codec = Codec(spec)
    decoder = FrameDecoder(length_format)
    try:
        frames = decoder.feed(data)
        if decoder.buffered_bytes or not frames:
            raise click.ClickException(f"{decoder.buffered_bytes} bytes do not form a whole frame")
        for payload in frames:
            message = codec.decode(payload)
            click.echo(pretty(message, spec))
            try:
                row = row_of(message)
                click.echo(f"transaction: {row.name} — {row.description}")
            except CodecError as err:
                click.echo(f"transaction: none ({err})")
            click.echo("")
    except CodecError as err:
        raise click.ClickException(f"format error (response code 30): {err}") from None

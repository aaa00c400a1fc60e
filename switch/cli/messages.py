"""`medswitch messages`: decode and show frames, PANs masked and secrets wiped."""

from __future__ import annotations

import sys
from pathlib import Path

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
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A frame trace the daemon wrote (setting trace_file): every frame in it, in order.",
)
def decode(frame_hex: str | None, interface: str, trace_file: Path | None) -> None:
    """Show FRAME_HEX (or hex on stdin): length prefix included, one or more frames."""
    if trace_file is not None:
        _decode_trace(trace_file)
        return
    text = frame_hex if frame_hex is not None else sys.stdin.read()
    _decode(text, interface)


def _decode_trace(path: Path) -> None:
    from switch.trace import read

    with path.open(encoding="utf-8") as lines:
        for traced in read(lines):
            click.echo(f"{traced.ts} {traced.interface} {traced.direction} {traced.peer}")
            if not traced.frame_hex or traced.interface not in _INTERFACES:
                click.echo("(a frame that did not decode: not traced)\n")
                continue
            for number, value in sorted(traced.masked.items()):
                click.echo(f"F{int(number):03d} (taken out of the traced frame): {value}")
            _decode(traced.frame_hex, traced.interface)


def _decode(text: str, interface: str) -> None:
    spec, length_format, row_of = _INTERFACES[interface]
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

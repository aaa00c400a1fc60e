"""The terminal simulators' commands, run through the CLI against a daemon: a TMK both sides
hold, and `medswitch ...` in a thread."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from click.testing import CliRunner, Result

from hsm.des import adjust_parity
from hsm.keys import KeyUsage
from hsm.lmk import Component
from switch.cli import main
from tests.support.daemon import Daemon, now


async def tmk_file(daemon: Daemon, terminal_id: str, path: Path) -> Path:
    """The same TMK in the centre's HSM and, as a component file, for the terminal's module."""
    clear = adjust_parity(secrets.token_bytes(16))
    await daemon.hsm.form_key(f"tmk/{terminal_id}", KeyUsage.TMK, [Component(clear)], now=now())
    path.write_text(clear.hex().upper() + "\n")
    return path


async def invoke(args: list[str]) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)

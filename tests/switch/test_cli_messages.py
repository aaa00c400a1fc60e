"""`medswitch messages decode` through the real console entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from switch.cli import main
from tests.support.frames import V8_FRAME


def test_decode_shows_the_v8_frame_and_names_no_transaction() -> None:
    result = CliRunner().invoke(main, ["messages", "decode", V8_FRAME.hex()])
    assert result.exit_code == 0, result.output
    assert "MTI  0200" in result.output
    assert "F064 message authentication code (CUP-ECB under MAK): 4233413039324145" in result.output
    assert "transaction: none" in result.output


def test_decode_masks_pans() -> None:
    from messages.codec import Codec
    from messages.framing import LengthFormat, encode_frame
    from messages.spec_terminal import TERMINAL
    from messages.terminal import BalanceInquiry
    from messages.terminal_table import build

    inquiry = BalanceInquiry(
        stan="000001",
        terminal_id="KIOSK001",
        institution_id="101320000000001",
        pan="6225880123456789",
    )
    frame = encode_frame(Codec(TERMINAL).encode(build(inquiry)), LengthFormat.BINARY2)
    result = CliRunner().invoke(main, ["messages", "decode"], input=frame.hex())
    assert result.exit_code == 0, result.output
    assert "622588******6789" in result.output
    assert "6225880123456789" not in result.output
    assert "transaction: balance_inquiry" in result.output


def test_bad_input_is_a_clear_cli_error() -> None:
    result = CliRunner().invoke(main, ["messages", "decode", "0005aa"])
    assert result.exit_code == 1
    assert "do not form a whole frame" in result.output
    result = CliRunner().invoke(main, ["messages", "decode", "zz"])
    assert "not hexadecimal" in result.output


def test_console_script_is_installed() -> None:
    script = shutil.which("medswitch", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run(
        [script, "messages", "decode", V8_FRAME.hex()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "MTI  0200" in done.stdout

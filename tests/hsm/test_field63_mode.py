"""The HSM's data cipher (field 63 under the TDK) is the one specs/terminal-interface.md
documents: its worked example, through SoftHsm (tests/contract recomputes the same example with
`cryptography` alone)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

from hsm.keys import KeyUsage
from hsm.lmk import Component
from tests.support.hsm_keys import make_soft_hsm

SPEC = Path(__file__).resolve().parents[2] / "specs" / "terminal-interface.md"


def test_soft_hsm_encrypts_the_spec_example() -> None:
    text = " ".join(SPEC.read_text(encoding="utf-8").split())
    example = r"TDK `([0-9A-F]{32})`, plaintext `([0-9A-F ]+)` .*? field 63 `([0-9A-F]+)`"
    found = re.search(example, text)
    assert found
    tdk, plain, cipher = found.groups()

    async def run() -> tuple[bytes, bytes]:
        soft = make_soft_hsm()
        now = datetime(2026, 12, 7, tzinfo=UTC)
        ref = await soft.form_key("t/TDK", KeyUsage.TDK, [Component(bytes.fromhex(tdk))], now=now)
        plaintext = bytes.fromhex(plain.replace(" ", ""))
        encrypted = await soft.encrypt_data(ref, plaintext)
        return encrypted, await soft.decrypt_data(ref, encrypted)

    encrypted, decrypted = asyncio.run(run())
    assert encrypted.hex().upper() == cipher
    assert decrypted == bytes.fromhex(plain.replace(" ", ""))

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
from messages.private import BillData
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


def test_the_card_layout_0230_is_the_codec_and_the_hsm_s() -> None:
    """specs/card-layout.md's 0230 with the health script (one command): the real field 63 codec
    builds its plaintext from the golden trace's UPDATE BINARY, the HSM encrypts it to the
    spec's field 63 under the worked example's TDK."""
    layout = " ".join((SPEC.parent / "card-layout.md").read_text(encoding="utf-8").split())
    example = r"plaintext TLV `([0-9A-F]+)` ‖ command, .*?\(`([0-9A-F]{32})`\): `([0-9A-F]+)`"
    found = re.search(example, layout)
    assert found, "card-layout.md's 0230 example"
    head, tdk, cipher = found.groups()
    update = re.search(r"> (04D6990064[0-9A-F]+)", layout)
    assert update
    command = bytes.fromhex(update.group(1))
    plain = BillData(bill_id="9054CA9CBE34A38E", health_script=bytes([len(command)]) + command)
    assert plain.build() == bytes.fromhex(head) + command

    async def run() -> bytes:
        soft = make_soft_hsm()
        now = datetime(2026, 12, 7, tzinfo=UTC)
        ref = await soft.form_key("t/TDK", KeyUsage.TDK, [Component(bytes.fromhex(tdk))], now=now)
        return await soft.encrypt_data(ref, plain.build())

    assert asyncio.run(run()).hex().upper() == cipher

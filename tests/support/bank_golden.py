"""The bank dialects' golden frames (specs/examples/frames.json → ``bank_dialects``): for each
preset, the centre's savings debit as :class:`switch.bank.link.BankLinkClient` encodes it,
from TEST ONLY clear keys, PIN, PAN and a fixed clock; and the centre's key change (0800 F70
101, ``medswitch`` preset) as :meth:`switch.bank.keys.LinkKeys.offer` makes its F48 from TEST
ONLY new keys under a TEST ONLY ZMK. Written once with

    python -m tests.support.bank_golden specs/examples/frames.json

and frozen; ``tests/switch/test_bank_dialect.py`` holds the encoder to them."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsm.des import Des, kcv
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import TEST_ONLY_COMPONENTS, Component, Lmk, combine
from hsm.pinblock import encode_format0
from hsm.soft import SoftHsm
from messages import bank
from messages.bank import KeyChange, SavingsDebit
from messages.codec import Message
from switch.bank.dialect import PRESETS
from switch.bank.keys import LinkAliases, LinkKeys
from switch.bank.wire import LinkWire
from switch.sessions import Sessions

CLOCK = datetime(2026, 12, 7, 6, 30, 15, tzinfo=UTC)
ZAK = "0123456789ABCDEFFEDCBA9876543210"  # TEST ONLY
ZPK = "89ABCDEF0123456776543210FEDCBA98"  # TEST ONLY (odd parity not needed: the HSM adjusts)
PIN = "123456"
PAN = "6212340000000019"
STAN = "000001"
CENTRE = "09990000"
AMOUNT_FEN = 20_000
ZMK = "F1E3D3C4B5A79789796B5B4C3D2F1F01"  # TEST ONLY, odd parity
NEW_KEYS = {  # TEST ONLY, odd parity: what the centre's HSM draws for the key change
    "ZAK": "1F2F3D4C5B6B79808091A2B3C4D5E6F7",
    "ZPK": "0E1F2C3D4A5B68797086A4B5C2D3E0F1",
    "FILE": "2C3D0E1F68794A5BC2D3A4B5E0F18697",
}


def debit(clock: datetime = CLOCK) -> SavingsDebit:
    block = Des(bytes.fromhex(ZPK)).encrypt_ecb(encode_format0(PIN, PAN))
    return SavingsDebit(
        stan=STAN,
        transmitted=clock.strftime("%m%d%H%M%S"),
        acquirer_id=CENTRE,
        pan=PAN,
        amount_fen=AMOUNT_FEN,
        pin_block=block,
    )


async def frame(preset: str) -> bytes:
    """The preset's savings debit, framed, MACed under the ZAK (F7 = the clock in GMT, F12/F13
    the clock's own time of day and date)."""
    dialect = PRESETS[preset]
    lmk = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]  # the ZAK is a published one
    hsm = SoftHsm(Lmk(lmk, kcv(combine(lmk))), MemoryKeyStore())
    zak = await hsm.form_key("golden/ZAK", KeyUsage.ZAK, [Component(bytes.fromhex(ZAK))], now=CLOCK)
    wire = LinkWire(dialect, hsm)
    typed = debit()
    message = bank.build(typed)
    optional = dialect.debit_fields(typed.stan, typed.transmitted, CLOCK)
    payload = await wire.encode(Message(message.mti, {**message.fields, **optional}), zak)
    return wire.frame(payload)


async def key_change_frame() -> bytes:
    """The centre's key change in the ``medswitch`` preset: F48 as the centre offers the new
    keys (drawn as NEW_KEYS) under the ZMK, MACed under the current ZAK (ZAK above)."""
    draws = iter(bytes.fromhex(NEW_KEYS[usage]) for usage in ("ZAK", "ZPK", "FILE"))
    store = MemoryKeyStore()
    lmk = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]
    hsm = SoftHsm(Lmk(lmk, kcv(combine(lmk))), store, random_bytes=lambda _n: next(draws))
    await hsm.form_key("golden/ZMK", KeyUsage.ZMK, [Component(bytes.fromhex(ZMK))], now=CLOCK)
    zak = await hsm.form_key("golden/ZAK", KeyUsage.ZAK, [Component(bytes.fromhex(ZAK))],
                             now=CLOCK)
    aliases = LinkAliases("golden/ZMK", "golden/ZAK", "golden/ZPK", "golden/FILE")
    field48, _ = await LinkKeys(hsm, Sessions(store), aliases, 300.0).offer(CLOCK)
    typed = KeyChange(stan=STAN, transmitted=CLOCK.strftime("%m%d%H%M%S"), acquirer_id=CENTRE,
                      keys=field48)
    wire = LinkWire(PRESETS["medswitch"], hsm)
    return wire.frame(await wire.encode(bank.build(typed), zak))


async def golden() -> dict[str, Any]:
    return {
        "test_only": "TEST ONLY keys and PIN: never for production",
        "clock": CLOCK.isoformat(),
        "zak": ZAK,
        "zpk": ZPK,
        "pin": PIN,
        "pan": PAN,
        "frames": {preset: (await frame(preset)).hex().upper() for preset in PRESETS},
        "key_change": {
            "preset": "medswitch",
            "zmk": ZMK,
            "new_keys": NEW_KEYS,
            "frame": (await key_change_frame()).hex().upper(),
        },
    }


def main(path: str) -> None:
    target = Path(path)
    examples = json.loads(target.read_text())
    examples["bank_dialects"] = asyncio.run(golden())
    target.write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])

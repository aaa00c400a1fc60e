"""The bank dialects' golden frames (specs/examples/frames.json → ``bank_dialects``): for each
preset, the centre's savings debit as :class:`switch.bank.link.BankLinkClient` encodes it,
from TEST ONLY clear keys, PIN, PAN and a fixed clock. Written once with

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
from messages.bank import SavingsDebit
from messages.codec import Message
from switch.bank.dialect import PRESETS
from switch.bank.wire import LinkWire

CLOCK = datetime(2026, 12, 7, 6, 30, 15, tzinfo=UTC)
ZAK = "0123456789ABCDEFFEDCBA9876543210"  # TEST ONLY
ZPK = "89ABCDEF0123456776543210FEDCBA98"  # TEST ONLY (odd parity not needed: the HSM adjusts)
PIN = "123456"
PAN = "6212340000000019"
STAN = "000001"
CENTRE = "09990000"
AMOUNT_FEN = 20_000


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


async def golden() -> dict[str, Any]:
    return {
        "test_only": "TEST ONLY keys and PIN: never for production",
        "clock": CLOCK.isoformat(),
        "zak": ZAK,
        "zpk": ZPK,
        "pin": PIN,
        "pan": PAN,
        "frames": {preset: (await frame(preset)).hex().upper() for preset in PRESETS},
    }


def main(path: str) -> None:
    target = Path(path)
    examples = json.loads(target.read_text())
    examples["bank_dialects"] = asyncio.run(golden())
    target.write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])

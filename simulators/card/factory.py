"""The virtual chip maker: blank cards and PSAMs carrying keys diversified from the demo's
TEST ONLY factory transport keys (`switch.card_io.personalize.FACTORY_TEST_ONLY_*`), ready for
`medswitch cards personalize` / `medswitch psams personalize`.

    python -m simulators.card.factory card 31010000000000000001 card.json
    python -m simulators.card.factory psam 31010000000000000777 psam.json

>>> state = blank_card(bytes.fromhex("00003101000000000001"))
>>> (state.serial.hex(), state.pin.hex() if state.pin else None)
('00003101000000000001', '123456')
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hsm import pboc
from hsm.des import Des
from simulators.card.card import VirtualCard
from simulators.card.state import CardState
from simulators.psam import PsamState, VirtualPsam
from switch.card_io.personalize import (
    FACTORY_TEST_ONLY_CONTROL,
    FACTORY_TEST_ONLY_PSAM_TRANSPORT,
)

FACTORY_PIN = bytes.fromhex("123456")


def _diversified(master_hex: str, serial: bytes) -> bytes:
    return pboc.diversify(Des(bytes.fromhex(master_hex)), pboc.card_factor(serial))


def blank_card(serial: bytes, *, pin: bytes | None = FACTORY_PIN) -> CardState:
    return CardState.blank(serial, _diversified(FACTORY_TEST_ONLY_CONTROL, serial), pin=pin)


def blank_psam(serial: bytes, terminal_id: bytes = bytes(6)) -> PsamState:
    transport = _diversified(FACTORY_TEST_ONLY_PSAM_TRANSPORT, serial)
    return PsamState.blank(serial, transport, terminal_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make a blank virtual card or PSAM (TEST ONLY).")
    parser.add_argument("kind", choices=["card", "psam"])
    parser.add_argument("serial", help="10-byte serial, 20 hex digits (8 bytes are right-aligned)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    serial = bytes.fromhex(args.serial).rjust(10, b"\0")
    if args.kind == "card":
        VirtualCard(blank_card(serial), path=args.out)
    else:
        VirtualPsam(blank_psam(serial), path=args.out)
    print(f"blank {args.kind} {serial.hex().upper()} -> {args.out} (TEST ONLY factory keys)")


if __name__ == "__main__":
    main()

"""Outside parties receiving keys from the centre (specs/key-ceremony.md): a card
personalisation bureau and a PSAM issuer. Each holds its own HSM (a SoftHsm with its own LMK),
forms its transport key from the components its custodians carry, imports the centre's export
file (TR-31 blocks, checked by MAC and KCV) and personalises blank virtual cards or PSAMs by
secure messaging, exactly as the centre's own `medswitch cards personalize` would — never
holding a card master key in clear outside its HSM.

    python -m simulators.bureau card --export keys.txt --kek-component a --kek-component b \\
        --serial 00003101000000000001 --out card.json
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hsm.des import kcv
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from simulators.card import VirtualCard
from simulators.card.factory import blank_card, blank_psam
from simulators.psam import VirtualPsam
from switch.card_io.connection import DirectConnection
from switch.card_io.personalize import (
    FACTORY_TEST_ONLY_CONTROL,
    FACTORY_TEST_ONLY_PSAM_TRANSPORT,
    CardMasterKeys,
    personalize_card,
    personalize_psam,
)

U = KeyUsage
EXPORT_MAGIC = "medswitch key export 1"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _blocks(export_text: str) -> list[str]:
    """The TR-31 blocks of an export file (its `key` lines' last field)."""
    lines = [line.split() for line in export_text.splitlines() if line.strip()]
    if not lines or " ".join(lines[0]) != EXPORT_MAGIC:
        raise ValueError("not a medswitch key export file")
    return [row[-1] for row in lines[1:] if row[0] == "key"]


@dataclass
class Party:
    """An outside party's HSM with the centre's keys imported: usage → reference."""

    hsm: SoftHsm
    keys: dict[KeyUsage, KeyRef]


async def receive(
    export_text: str, kek_components: list[Component], kek_usage: KeyUsage
) -> Party:
    """Form the transport key from its components and import every block under it."""
    lmk_parts = [Component(secrets.token_bytes(16)) for _ in range(2)]
    hsm = SoftHsm(Lmk(lmk_parts, kcv(combine(lmk_parts, minimum=2))), MemoryKeyStore())
    kek = await hsm.form_key("centre/kek", kek_usage, kek_components, now=_now())
    keys = {}
    for block in _blocks(export_text):
        ref = await hsm.import_key_block(kek, block, now=_now())
        keys[ref.usage] = ref
    return Party(hsm, keys)


async def personalise_card(party: Party, serial: bytes, public: bytes, holder: bytes,
                           key_version: int) -> VirtualCard:
    """A blank card (factory control key) personalised with the imported card master keys;
    the card keeps its factory PIN."""
    k = party.keys
    factory = await party.hsm.form_key(
        "factory/control", U.MK_CONTROL, [Component.parse(FACTORY_TEST_ONLY_CONTROL)], now=_now()
    )
    masters = CardMasterKeys(
        control=k[U.MK_CONTROL], load=k[U.MK_LOAD], purchase=k[U.MK_PURCHASE], tac=k[U.MK_TAC],
        unload=k[U.MK_UNLOAD], pin_reload=k[U.MK_PIN_RELOAD], pin_unblock=k[U.MK_PIN_UNBLOCK],
        app_maint=k[U.MK_APP_MAINT], data_check=k[U.DATA_CHECK], version=key_version,
    )
    card = VirtualCard(blank_card(serial))
    conn = DirectConnection(card)
    conn.connect()
    await personalize_card(conn, party.hsm, masters, serial, public, holder, bytes(60), None,
                           factory=factory)
    return card


async def personalise_psam(party: Party, serial: bytes, terminal_no: bytes,
                           key_version: int) -> VirtualPsam:
    """A blank PSAM (factory transport key) with the imported purchase master key."""
    transport = await party.hsm.form_key(
        "factory/psam-transport", U.PSAM_TRANSPORT,
        [Component.parse(FACTORY_TEST_ONLY_PSAM_TRANSPORT)], now=_now(),
    )
    psam = VirtualPsam(blank_psam(serial))
    conn = DirectConnection(psam)
    conn.connect()
    await personalize_psam(conn, party.hsm, transport, party.keys[U.MK_PURCHASE], serial,
                           terminal_no, key_version)
    return psam


def _components(paths: list[Path]) -> list[Component]:
    parts = []
    for path in paths:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        parts.append(Component.parse(lines[0], lines[1].split(":", 1)[-1]))
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A personalisation bureau / PSAM issuer.")
    parser.add_argument("kind", choices=["card", "psam"])
    parser.add_argument("--export", type=Path, required=True, help="The centre's export file.")
    parser.add_argument("--kek-component", type=Path, action="append", required=True)
    parser.add_argument("--serial", required=True, help="20 hex digits")
    parser.add_argument("--key-version", type=int, required=True)
    parser.add_argument("--terminal-no", default="000000000000", help="PSAM: 12 digits")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    serial = bytes.fromhex(args.serial).rjust(10, b"\0")
    usage = U.BUREAU_KEK if args.kind == "card" else U.PSAM_KEK

    async def run() -> None:
        party = await receive(args.export.read_text(), _components(args.kek_component), usage)
        if args.kind == "card":
            public = bytes(10) + serial + bytes(10)
            card = await personalise_card(party, serial, public, bytes(39), args.key_version)
            VirtualCard(card.state, path=args.out)
        else:
            terminal_no = bytes.fromhex(args.terminal_no)
            psam = await personalise_psam(party, serial, terminal_no, args.key_version)
            VirtualPsam(psam.state, path=args.out)

    asyncio.run(run())
    print(f"{args.kind} {serial.hex().upper()} personalised -> {args.out}")


if __name__ == "__main__":
    main()

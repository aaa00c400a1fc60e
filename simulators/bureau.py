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
from messages.card_records import HealthData
from simulators.card import VirtualCard
from simulators.card.factory import blank_card, blank_psam
from simulators.psam import VirtualPsam
from switch.card_io import issuance
from switch.card_io.connection import DirectConnection
from switch.card_io.personalize import (
    FACTORY_TEST_ONLY_CONTROL,
    FACTORY_TEST_ONLY_PSAM_TRANSPORT,
    CardMasterKeys,
    personalize_card,
    personalize_psam,
    write_psam_purchase_key,
)
from switch.card_io.record_book import NoRecordKeyError, write_health

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
    """An outside party's HSM with the centre's keys imported: (the centre's alias and
    version) → the reference in the party's own store."""

    hsm: SoftHsm
    kek: KeyRef
    keys: dict[tuple[str, int], KeyRef]

    def key(self, usage: KeyUsage, version: int | None = None) -> KeyRef:
        """The one key of USAGE received at the centre's VERSION (the newest when None)."""
        found = [(v, ref) for (_, v), ref in self.keys.items() if ref.usage is usage]
        if version is None and found:
            version = max(v for v, _ in found)
        matching = [ref for v, ref in found if v == version]
        if len(matching) != 1:
            raise LookupError(f"{len(matching)} keys {usage.value} v{version} received")
        return matching[0]

    def received(self, usage: KeyUsage, version: int) -> KeyRef | None:
        """The key of USAGE at VERSION when it was received, else None."""
        found = [ref for (_, v), ref in self.keys.items() if ref.usage is usage and v == version]
        return found[0] if len(found) == 1 else None

    def by_alias(self, alias: str, version: int) -> KeyRef:
        return self.keys[(alias, version)]

    async def receive(self, export_text: str) -> None:
        """Import every block of an export file under the transport key."""
        for block in _blocks(export_text):
            sent = keyblock_version(block)
            ref = await self.hsm.import_key_block(self.kek, block, now=_now())
            self.keys[(ref.alias, sent)] = ref


def keyblock_version(block: str) -> int:
    """The centre's version bound in a block's optional block 03 (specs/key-ceremony.md)."""
    at, count = 16, int(block[12:14])
    for _ in range(count):
        ident, length = block[at : at + 2], int(block[at + 2 : at + 4], 16)
        if ident == "03":
            return int(block[at + 4 : at + length])
        at += length
    raise ValueError("key block without its version (optional block 03)")


async def party(components: list[Component], kek_usage: KeyUsage) -> Party:
    """An outside party's HSM (its own LMK) with the transport key formed from components."""
    lmk_parts = [Component(secrets.token_bytes(16)) for _ in range(2)]
    hsm = SoftHsm(Lmk(lmk_parts, kcv(combine(lmk_parts, minimum=2))), MemoryKeyStore())
    kek = await hsm.form_key("centre/kek", kek_usage, components, now=_now())
    return Party(hsm, kek, {})


async def receive(
    export_text: str, components: list[Component], kek_usage: KeyUsage
) -> Party:
    """A party formed and an export file received."""
    received = await party(components, kek_usage)
    await received.receive(export_text)
    return received


async def personalise_card(party: Party, serial: bytes, public: bytes, holder: bytes,
                           key_version: int, health: HealthData | None = None,
                           signed: issuance.BatchSignatures | None = None) -> VirtualCard:
    """A blank card (factory control key) personalised with the centre's card master keys of
    KEY_VERSION — the record key DRK too when MK_RECORD was received — and the health data
    (EF 0019, with its data check code) when the batch carries them; the card keeps its
    factory PIN. The centre's signatures the batch carries (SIGNED) go into EF 001B — records
    1-2 the holder's, 3-4 the health data's — by the chained scripts the bureau MACs under the
    card's DRK (the signing key itself never leaves the centre's HSM); a card without the DRK
    (no MK_RECORD received) cannot take them."""
    factory = await party.hsm.form_key(
        "factory/control", U.MK_CONTROL, [Component.parse(FACTORY_TEST_ONLY_CONTROL)], now=_now()
    )

    def k(usage: KeyUsage) -> KeyRef:
        return party.key(usage, key_version)

    masters = CardMasterKeys(
        control=k(U.MK_CONTROL), load=k(U.MK_LOAD), purchase=k(U.MK_PURCHASE), tac=k(U.MK_TAC),
        unload=k(U.MK_UNLOAD), pin_reload=k(U.MK_PIN_RELOAD), pin_unblock=k(U.MK_PIN_UNBLOCK),
        app_maint=k(U.MK_APP_MAINT), data_check=party.key(U.DATA_CHECK), version=key_version,
        record=party.received(U.MK_RECORD, key_version),
    )
    if health is not None and masters.record is None:
        raise NoRecordKeyError(f"health data to write and no MK_RECORD v{key_version} received")
    card = VirtualCard(blank_card(serial))
    conn = DirectConnection(card)
    conn.connect()
    holder_signature = None if signed is None else signed.holder
    await personalize_card(conn, party.hsm, masters, serial, public, holder, bytes(60), None,
                           factory=factory, holder_signature=holder_signature)
    if health is not None:
        health_signature = None if signed is None else signed.health
        await write_health(conn, party.hsm, masters, serial, health, health_signature)
    return card


async def personalise_batch(party: Party, batch_data: bytes) -> list[tuple[str, VirtualCard]]:
    """Every card of a centre's issuance batch (sealed under the file key the bureau received
    with the card master keys): (card number, the personalised card)."""
    batch = await issuance.open_batch(party.hsm, party.key(U.FILE), batch_data)
    cards = []
    for record in batch.records:
        public, holder = issuance.card_files(record, batch.created.date())
        card = await personalise_card(party, record.serial_bytes, public, holder,
                                      batch.key_version, record.health, record.signed)
        cards.append((record.card_no, card))
    return cards


async def personalise_psam(party: Party, psam: VirtualPsam | None, serial: bytes,
                           terminal_no: bytes, key_version: int) -> VirtualPsam:
    """A blank PSAM (factory transport key; PSAM is None) or one already issued, given the
    centre's purchase master key of KEY_VERSION (a PSAM holds one per version)."""
    transport = await party.hsm.form_key(
        "factory/psam-transport", U.PSAM_TRANSPORT,
        [Component.parse(FACTORY_TEST_ONLY_PSAM_TRANSPORT)], now=_now(),
    )
    issued = psam is not None
    psam = psam or VirtualPsam(blank_psam(serial))
    conn = DirectConnection(psam)
    conn.connect()
    purchase = party.key(U.MK_PURCHASE, key_version)
    if issued:
        await write_psam_purchase_key(conn, party.hsm, transport, purchase, serial, key_version)
    else:
        await personalize_psam(conn, party.hsm, transport, purchase, serial, terminal_no,
                               key_version)
    return psam


def kek_components(paths: list[Path]) -> list[Component]:
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
        received = await receive(args.export.read_text(), kek_components(args.kek_component), usage)
        if args.kind == "card":
            public = bytes(10) + serial + bytes(10)
            card = await personalise_card(received, serial, public, bytes(39), args.key_version)
            VirtualCard(card.state, path=args.out)
        else:
            terminal_no = bytes.fromhex(args.terminal_no)
            psam = await personalise_psam(received, None, serial, terminal_no, args.key_version)
            VirtualPsam(psam.state, path=args.out)

    asyncio.run(run())
    print(f"{args.kind} {serial.hex().upper()} personalised -> {args.out}")


if __name__ == "__main__":
    main()

"""The centre's signatures on a card (specs/card-layout.md "Signatures"), the issuer's side:
the HSM signs the holder data (EF 0016) and the health data (EF 0019 bytes 0-91) under the
centre's CARD_SIGN key, and the signature goes into EF 001B as two UPDATE RECORD commands
line-protected under the card's record key — chained (CLA `14`) under one card challenge with
whatever else the script writes (messages.card_signatures has the layouts).

The version of the signing key is in the signed message (a POS holding the published keys of
every version checks an old card with the old key); it is the key's version in the HSM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from hsm.interface import Hsm
from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from messages.card_signatures import (
    HEALTH_RECORDS,
    HOLDER_RECORDS,
    VERSION_MAX,
    health_message,
    holder_message,
    split_signature,
    update_signature_command,
)
from switch.card_io.issuance import BatchSignatures, IssuanceRecord, card_files

SIGNING_ALIAS = "centre/CARD_SIGN"  # the newest version signs (specs/key-ceremony.md)


class SigningKeyError(ValueError):
    """A signing key the card's messages cannot name (not CARD_SIGN, or a version over 255)."""


def _version(signing: KeyRef) -> int:
    if signing.usage is not KeyUsage.CARD_SIGN:
        raise SigningKeyError(f"{signing.alias} v{signing.version} is not a CARD_SIGN key")
    if not 1 <= signing.version <= VERSION_MAX:
        raise SigningKeyError(f"a card signing key version is 1 to {VERSION_MAX}")
    return signing.version


async def sign_holder(hsm: Hsm, signing: KeyRef, serial: bytes, ef0016: bytes) -> bytes:
    """The centre's signature (256 bytes) over the cardholder file of that card."""
    return await hsm.sign(signing, holder_message(serial, ef0016, version=_version(signing)))


async def sign_health(hsm: Hsm, signing: KeyRef, serial: bytes, ef0019_data: bytes) -> bytes:
    """The centre's signature over EF 0019's 92 data bytes of that card."""
    message = health_message(serial, ef0019_data, version=_version(signing))
    return await hsm.sign(signing, message)


async def script(
    hsm: Hsm,
    record_key: CardKeyPath,
    card_challenge: bytes,
    commands: Sequence[bytes],
) -> list[bytes]:
    """MAC a chained script for one challenge: command i (without its MAC, CLA `14` but the
    last, `04`) gets the record key's MAC with IV challenge ‖ i."""
    macs = [
        await hsm.script_mac(record_key, card_challenge, command, sequence)
        for sequence, command in enumerate(commands)
    ]
    return [command + mac for command, mac in zip(commands, macs, strict=True)]


def signature_commands(signature: bytes, records: tuple[int, int], *, last: bool) -> list[bytes]:
    """The two UPDATE RECORD commands writing a signature (not MACed): chained, the second
    one ending the script when `last`."""
    first, second = split_signature(signature)
    return [
        update_signature_command(records[0], first, chained=True),
        update_signature_command(records[1], second, chained=not last),
    ]


async def holder_script(
    hsm: Hsm,
    signing: KeyRef,
    record_key: CardKeyPath,
    serial: bytes,
    ef0016: bytes,
    card_challenge: bytes,
) -> list[bytes]:
    """Records 1-2 of EF 001B for the holder file as written (personalisation)."""
    signature = await sign_holder(hsm, signing, serial, ef0016)
    return await holder_signature_script(hsm, record_key, signature, card_challenge)


async def holder_signature_script(
    hsm: Hsm, record_key: CardKeyPath, signature: bytes, card_challenge: bytes
) -> list[bytes]:
    """Records 1-2 of EF 001B for a holder signature already made (the one an issuance batch
    carries, made when the centre created it): MACed by the record key, not signed again."""
    commands = signature_commands(signature, HOLDER_RECORDS, last=True)
    return await script(hsm, record_key, card_challenge, commands)


async def health_signature_commands(
    hsm: Hsm, signing: KeyRef, serial: bytes, ef0019_data: bytes
) -> list[bytes]:
    """Records 3-4 for the health data, chained (CLA `14` both): the health script's first
    commands, before its UPDATE BINARY of EF 0019 (switch.card_io.record_book)."""
    signature = await sign_health(hsm, signing, serial, ef0019_data)
    return signature_commands(signature, HEALTH_RECORDS, last=False)


async def sign_record(
    hsm: Hsm, signing: KeyRef, record: IssuanceRecord, issued: date
) -> IssuanceRecord:
    """The record with the centre's signatures over the holder file the personaliser will write
    (issuance.card_files) and over its health data (when it carries any): what a batch carries
    so that a bureau, which never holds the signing key, writes them into EF 001B."""
    _, holder = card_files(record, issued)
    serial = record.serial_bytes
    health = record.health
    signed = BatchSignatures(
        _version(signing),
        await sign_holder(hsm, signing, serial, holder),
        None if health is None else await sign_health(hsm, signing, serial, health.encode()),
    )
    return replace(record, signed=signed)

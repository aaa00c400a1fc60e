"""Issuer-side writes of the card's record book (specs/card-layout.md) over a card connection,
every cryptogram from the HSM: the health data file EF 0019 with its data check code, written
by line-protected UPDATE BINARY under the card's record key (MK_RECORD diversified by the
application serial), for the card's own challenge — at issuance (initial health data) or on a
replacement card written from the centre's data; and, on a replacement card, the visit records
the centre kept (EF 001A), each by APPEND RECORD under a challenge of its own. With the centre's
signing key (CARD_SIGN) the health script first writes the data's signature into EF 001B
(switch.card_io.signatures), chained under the same challenge, so a POS can check the data
offline.
"""

from __future__ import annotations

from typing import NamedTuple

from hsm.errors import KeyNotFoundError
from hsm.interface import Hsm
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore
from ledger.medical.card_copies import Signed
from messages.card_records import (
    VISIT_RECORDS_MAX,
    HealthData,
    append_record_command,
    update_health_command,
)
from messages.card_signatures import HEALTH_RECORDS, health_message
from routing.cardkeys import card_master_alias
from switch.card_io import signatures
from switch.card_io.connection import CardConnection, expect
from switch.card_io.personalize import SELECT_APP, CardMasterKeys, challenge

DATA_CHECK_ALIAS = "centre/DATA_CHECK"


class NoRecordKeyError(ValueError):
    """Card master keys without MK_RECORD: the record book cannot be written."""


async def health_update(
    hsm: Hsm, keys: CardMasterKeys, serial: bytes, health: HealthData, card_challenge: bytes
) -> bytes:
    """The UPDATE BINARY of EF 0019 for ``card_challenge``: the 92 data bytes, their data check
    code (DATA_CHECK, diversified) and the script MAC (record key)."""
    if keys.record is None:
        raise NoRecordKeyError("no MK_RECORD among the card master keys")
    data = health.encode()
    code = await hsm.card_data_check_code(keys.path(keys.data_check, serial), data)
    command = update_health_command(data + code)
    mac = await hsm.script_mac(keys.path(keys.record, serial), card_challenge, command)
    return command + mac


async def health_script(
    hsm: Hsm, keys: CardMasterKeys, serial: bytes, health: HealthData, card_challenge: bytes,
    signature: bytes | None = None,
) -> list[bytes]:
    """The whole health-data script for ``card_challenge``, to send in order (stopping at the
    first status word that is not 9000): with a signature (``signature``, made beforehand — a
    batch's, for a bureau — or the signing key's, ``keys.signing``, now) its UPDATE RECORD 3
    and 4 of EF 001B (CLA `14`), then the UPDATE BINARY of EF 0019 (CLA `04`)
    — the data last, so a script cut short leaves the card's data as they were and the centre
    sees them differ at the next contact; without one, the UPDATE BINARY alone."""
    if keys.record is None:
        raise NoRecordKeyError("no MK_RECORD among the card master keys")
    data = health.encode()
    code = await hsm.card_data_check_code(keys.path(keys.data_check, serial), data)
    commands = []
    if signature is not None:
        commands += signatures.signature_commands(signature, HEALTH_RECORDS, last=False)
    elif keys.signing is not None:
        commands += await signatures.health_signature_commands(hsm, keys.signing, serial, data)
    commands.append(update_health_command(data + code))
    record_key = keys.path(keys.record, serial)
    return await signatures.script(hsm, record_key, card_challenge, commands)


class CentreHealthScripts:
    """The script that brings a person's pending health data to a card at its next contact
    (routing.health_contact; ledger.medical.card_copies.HealthScripts): :func:`health_script`
    under the card master keys of the card's key version, the newest centre/DATA_CHECK and the
    newest centre/CARD_SIGN."""

    def __init__(self, hsm: Hsm, store: KeyStore) -> None:
        self._hsm = hsm
        self._store = store

    async def _signing(self) -> KeyRef | None:
        """The newest centre/CARD_SIGN, which signs the health data (None: sent unsigned)."""
        found = await self._store.list(signatures.SIGNING_ALIAS)
        return max(found, key=lambda stored: stored.version).ref if found else None

    async def signature(self, application_serial: str, data: bytes) -> Signed | None:
        """The newest centre/CARD_SIGN's signature over the health message of EF 0019's 92
        data bytes for that card: the same bytes the health script writes into EF 001B
        (RSASSA-PKCS1-v1_5 is deterministic). None: no signing key."""
        signing = await self._signing()
        if signing is None:
            return None
        serial = bytes.fromhex(application_serial.rjust(20, "0"))
        signature = await signatures.sign_health(self._hsm, signing, serial, data)
        message = health_message(serial, data, version=signing.version)
        return Signed(signing.version, message, signature)

    async def __call__(
        self, application_serial: str, key_version: int, data: bytes, card_challenge: bytes
    ) -> list[bytes]:
        checks = await self._store.list(DATA_CHECK_ALIAS)
        if not checks:
            raise KeyNotFoundError(f"no {DATA_CHECK_ALIAS}")
        newest = max(checks, key=lambda stored: stored.version)

        def master(usage: KeyUsage) -> KeyRef:
            return KeyRef(card_master_alias(usage), key_version, usage)

        keys = CardMasterKeys(
            master(KeyUsage.MK_CONTROL), master(KeyUsage.MK_LOAD), master(KeyUsage.MK_PURCHASE),
            master(KeyUsage.MK_TAC), master(KeyUsage.MK_UNLOAD), master(KeyUsage.MK_PIN_RELOAD),
            master(KeyUsage.MK_PIN_UNBLOCK), master(KeyUsage.MK_APP_MAINT), newest.ref,
            key_version, master(KeyUsage.MK_RECORD), await self._signing(),
        )  # fmt: skip
        serial = bytes.fromhex(application_serial.rjust(20, "0"))
        return await health_script(self._hsm, keys, serial, HealthData.decode(data), card_challenge)


async def write_health(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, health: HealthData,
    signature: bytes | None = None,
) -> None:
    """SELECT, GET CHALLENGE, then the HSM's health script (the card checks every command);
    `signature`: the health signature made beforehand (see :func:`health_script`)."""
    expect(conn, SELECT_APP, "SELECT")
    for apdu in await health_script(hsm, keys, serial, health, challenge(conn), signature):
        expect(conn, apdu, "UPDATE RECORD 001B" if apdu[1] == 0xDC else "UPDATE BINARY 0019")


async def check_health(hsm: Hsm, keys: CardMasterKeys, serial: bytes, file_bytes: bytes) -> bool:
    """Whether EF 0019 as read (96 bytes, after VERIFY) carries the centre's data check code."""
    if len(file_bytes) != 96:
        return False
    path = keys.path(keys.data_check, serial)
    return await hsm.verify_card_data_check_code(path, file_bytes[:92], file_bytes[92:])


class BookCopy(NamedTuple):
    """What personalisation writes into a card's record book: the person's health data (None:
    the file stays unwritten) and visit records (72 bytes each), oldest first."""

    health: HealthData | None
    visits: tuple[bytes, ...] = ()


async def append_visit(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, record: bytes
) -> None:
    """GET CHALLENGE, then the HSM's APPEND RECORD of the visit record (72 bytes, as the centre
    kept it) to EF 001A, MACed under the card's record key."""
    if keys.record is None:
        raise NoRecordKeyError("no MK_RECORD among the card master keys")
    command = append_record_command(record)
    mac = await hsm.script_mac(keys.path(keys.record, serial), challenge(conn), command)
    expect(conn, command + mac, "APPEND RECORD 001A")


async def write_book(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, book: BookCopy
) -> None:
    """The health data, then each visit oldest first (so record 1 is the newest), at most the
    newest ten the card's file holds."""
    if book.health is None and not book.visits:
        return
    if book.health is not None:
        await write_health(conn, hsm, keys, serial, book.health)
    else:
        expect(conn, SELECT_APP, "SELECT")
    for record in book.visits[-VISIT_RECORDS_MAX:]:
        await append_visit(conn, hsm, keys, serial, record)

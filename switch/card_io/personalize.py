"""Issuer-side card and PSAM steps over a card connection, with every cryptogram from the HSM
(DESIGN §4: card keys are diversified in the HSM and written by secure messaging; nothing here
ever holds a clear key or PIN).

- `personalize_card`: the card keys under the master control key, EF 0015/0016/0017 by
  line-protected UPDATE BINARY (DAMK), the centre's signature of EF 0016 into EF 001B (with a
  signing key and the record key: switch.card_io.signatures), the initial PIN by PIN UNBLOCK
  (enciphered under DPUK);
- `personalize_psam`: the terminal number, then the purchase master key under the PSAM's
  transport key;
- lifecycle: application block/unblock, PIN reload and unblock, writing the authorisation file
  with a fresh card data check code.

Card layout these follow (simulators.card): transaction keys at index `KEY_INDEX`, the others
at 0; key attributes `type | use right | change right | version | algorithm`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hsm.interface import Hsm
from hsm.keys import CardKeyPath, KeyRef
from hsm.pboc import card_factor
from switch.card_io import signatures
from switch.card_io.connection import CardConnection, expect

KEY_INDEX = 0x01
APP_AID = bytes.fromhex("D15600000503")
SELECT_APP = bytes.fromhex("00A40400") + bytes([len(APP_AID)]) + APP_AID
GET_CHALLENGE = bytes.fromhex("0084000004")
ALG_3DES = 0x00
RIGHTS = b"\xf0\xf0"  # use right, change right: free under the card's own protection
SFI_PUBLIC, SFI_HOLDER, SFI_AUTHORISATION = 0x15, 0x16, 0x17
AUTHORISATION_DATA_BYTES = 60
PSAM_PURCHASE_USAGE = 0x22  # one level of diversification, purchase key
KEY_TYPE_CONTROL = 0x39
RECORD_KEY_INDEX = 0x02  # the record key DRK: a second maintenance key (card type 36)

# The chip makers' transport keys of the demo deployment — TEST ONLY, published so the virtual
# card and PSAM factories (simulators) and the demo HSM agree: blank cards leave the factory
# with their control key diversified from the first, blank PSAMs with their transport key from
# the second. Personalisation replaces a card's control key with the issuer's at once.
FACTORY_TEST_ONLY_CONTROL = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"
FACTORY_TEST_ONLY_PSAM_TRANSPORT = "F0E1D2C3B4A5968778695A4B3C2D1E0F"


AUTHORISATION_VERSION = 0x01
AUTHORISATION_ENTRY_BYTES = 6
AUTHORISATIONS_MAX = 9


def encode_authorisations(entries: list[tuple[str, int]]) -> bytes:
    """The 60 data bytes of EF 0017: version(1) | count(1) | up to 9 × (special-expense
    category, 4 ASCII characters space-padded | year, 2 bytes BCD) | zeros.

    >>> encode_authorisations([("M01", 2026)]).hex()[:16]
    '01014d3031202026'
    >>> decode_authorisations(encode_authorisations([("M01", 2026), ("T2", 2027)]))
    [('M01', 2026), ('T2', 2027)]
    """
    if len(entries) > AUTHORISATIONS_MAX:
        raise ValueError(f"at most {AUTHORISATIONS_MAX} authorisations fit the card")
    out = bytes([AUTHORISATION_VERSION, len(entries)])
    for category, year in sorted(entries):
        code = category.encode("ascii")
        if not 1 <= len(code) <= 4 or not 2000 <= year <= 9999:
            raise ValueError("a category is 1-4 ASCII characters and a year yyyy")
        out += code.ljust(4, b" ") + bytes.fromhex(f"{year:04d}")
    return out.ljust(AUTHORISATION_DATA_BYTES, b"\0")


def decode_authorisations(data: bytes) -> list[tuple[str, int]]:
    if len(data) < 2 or data[0] != AUTHORISATION_VERSION:
        return []
    entries = []
    for i in range(min(data[1], AUTHORISATIONS_MAX)):
        entry = data[2 + i * 6 : 8 + i * 6]
        entries.append((entry[:4].decode("ascii").rstrip(), int(entry[4:].hex())))
    return entries


@dataclass(frozen=True, slots=True)
class CardMasterKeys:
    """References to one generation of card master keys (never the keys)."""

    control: KeyRef
    load: KeyRef
    purchase: KeyRef
    tac: KeyRef
    unload: KeyRef
    pin_reload: KeyRef
    pin_unblock: KeyRef
    app_maint: KeyRef
    data_check: KeyRef
    version: int = 1
    record: KeyRef | None = None  # MK_RECORD: the record book's key DRK (specs/card-layout.md)
    signing: KeyRef | None = None  # CARD_SIGN: the centre's signature on holder and health data

    def path(self, key: KeyRef, serial: bytes) -> CardKeyPath:
        return CardKeyPath(key, (card_factor(serial),))

    def slots(self) -> list[tuple[KeyRef, int, int]]:
        """(master, card key type, index), the maintenance key first so files can follow."""
        return [
            (self.app_maint, 0x36, 0),
            (self.load, 0x3F, KEY_INDEX),
            (self.purchase, 0x3E, KEY_INDEX),
            (self.unload, 0x3D, KEY_INDEX),
            (self.tac, 0x34, KEY_INDEX),
            (self.pin_reload, 0x38, 0),
            (self.pin_unblock, 0x37, 0),
            *([] if self.record is None else [(self.record, 0x36, RECORD_KEY_INDEX)]),
        ]


@dataclass(frozen=True, slots=True)
class PinEntry:
    """A PIN as it reaches the issuer: a format-0 block under a PIK or ZPK, with the PAN."""

    pin_key: KeyRef
    pin_block: bytes
    pan: str


def challenge(conn: CardConnection) -> bytes:
    return expect(conn, GET_CHALLENGE, "GET CHALLENGE")


async def personalize_card(
    conn: CardConnection,
    hsm: Hsm,
    keys: CardMasterKeys,
    serial: bytes,
    public: bytes,
    holder: bytes,
    authorisation: bytes,
    pin: PinEntry | None,
    factory: KeyRef | None = None,
    holder_signature: bytes | None = None,
) -> None:
    """Keys, files (the authorisation file gets its data check code) and the initial PIN
    (None: the card keeps its factory PIN until the cardholder changes it).

    `factory`: the chip maker's control master the blank card's control key is diversified
    from; the issuer's control key is then written first, under it. `holder_signature`: the
    centre's signature over `holder` made beforehand (a batch's, for a bureau); else the
    signing key among `keys` signs it now; either way written when the card gets its DRK."""
    expect(conn, SELECT_APP, "SELECT")
    control = keys.path(keys.control, serial)
    if factory is not None:
        header = bytes([0x84, 0xD4, 0x01, 0x00])
        attributes = bytes([KEY_TYPE_CONTROL]) + RIGHTS + bytes([keys.version, ALG_3DES])
        apdu = await hsm.write_card_key(
            keys.path(factory, serial), control, challenge(conn), header, attributes
        )
        expect(conn, apdu, "WRITE KEY (control)")
    for master, key_type, index in keys.slots():
        header = bytes([0x84, 0xD4, 0x01, index])
        attributes = bytes([key_type]) + RIGHTS + bytes([keys.version, ALG_3DES])
        apdu = await hsm.write_card_key(
            control, keys.path(master, serial), challenge(conn), header, attributes
        )
        expect(conn, apdu, f"WRITE KEY {key_type:02X}")
    await update_binary(conn, hsm, keys, serial, SFI_PUBLIC, public)
    await update_binary(conn, hsm, keys, serial, SFI_HOLDER, holder)
    await write_authorisation(conn, hsm, keys, serial, authorisation)
    signed = holder_signature is not None or keys.signing is not None
    if signed and keys.record is not None:
        await write_holder_signature(conn, hsm, keys, serial, holder, holder_signature)
    if pin is not None:
        await unblock_pin(conn, hsm, keys, serial, pin)


async def update_binary(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, sfi: int, data: bytes
) -> None:
    command = bytes([0x04, 0xD6, 0x80 | sfi, 0x00, len(data) + 4]) + data
    mac = await hsm.script_mac(keys.path(keys.app_maint, serial), challenge(conn), command)
    expect(conn, command + mac, f"UPDATE BINARY {sfi:02X}")


async def write_holder_signature(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, holder: bytes,
    signature: bytes | None = None,
) -> None:
    """EF 001B records 1-2: the centre's signature over EF 0016 as written (`signature`, made
    beforehand, or the signing key's now), one chained script under one challenge (the record
    key)."""
    if keys.record is None:
        raise ValueError("the holder signature needs the record key")
    record_key = keys.path(keys.record, serial)
    if signature is None:
        if keys.signing is None:
            raise ValueError("the holder signature needs a signature or the signing key")
        signature = await signatures.sign_holder(hsm, keys.signing, serial, holder)
    commands = await signatures.holder_signature_script(hsm, record_key, signature,
                                                        challenge(conn))
    for command in commands:
        expect(conn, command, "UPDATE RECORD 001B")


async def write_authorisation(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, data: bytes
) -> bytes:
    """EF 0017 = data (60 bytes) || data check code over EF 0016 || data. Returns the code."""
    if len(data) != AUTHORISATION_DATA_BYTES:
        raise ValueError("authorisation data are 60 bytes")
    holder = expect(conn, bytes([0x00, 0xB0, 0x80 | SFI_HOLDER, 0x00, 0x00]), "READ 0016")
    code = await hsm.card_data_check_code(keys.path(keys.data_check, serial), holder + data)
    await update_binary(conn, hsm, keys, serial, SFI_AUTHORISATION, data + code)
    return code


async def unblock_pin(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, pin: PinEntry
) -> None:
    """PIN UNBLOCK: the HSM enciphers the PIN under the card's DPUK and MACs the command."""
    apdu = await hsm.pin_unblock_command(
        keys.path(keys.pin_unblock, serial), pin.pin_key, pin.pin_block, pin.pan, challenge(conn)
    )
    expect(conn, apdu, "PIN UNBLOCK")


async def reload_pin(
    conn: CardConnection,
    hsm: Hsm,
    keys: CardMasterKeys,
    serial: bytes,
    pin: PinEntry,
    pin_bcd: bytes,
) -> None:
    """RELOAD PIN `80 5E 00 00 Lc new || MAC`: the PIN travels as the standard has it (the
    PIN pad's BCD digits); the HSM checks it against the enciphered block through the MAC."""
    mac = await hsm.pin_reload_mac(
        keys.path(keys.pin_reload, serial), pin.pin_key, pin.pin_block, pin.pan
    )
    data = pin_bcd + mac
    expect(conn, bytes([0x80, 0x5E, 0x00, 0x00, len(data)]) + data, "RELOAD PIN")


async def application_block(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes, *, permanent: bool
) -> None:
    command = bytes([0x84, 0x1E, 0x00, 0x01 if permanent else 0x00, 0x04])
    await _script(conn, hsm, keys, serial, command, "APPLICATION BLOCK")


async def application_unblock(
    conn: CardConnection, hsm: Hsm, keys: CardMasterKeys, serial: bytes
) -> None:
    await _script(conn, hsm, keys, serial, bytes.fromhex("8418000004"), "APPLICATION UNBLOCK")


async def _script(
    conn: CardConnection,
    hsm: Hsm,
    keys: CardMasterKeys,
    serial: bytes,
    command: bytes,
    what: str,
) -> None:
    mac = await hsm.script_mac(keys.path(keys.app_maint, serial), challenge(conn), command)
    expect(conn, command + mac, what)


async def personalize_psam(
    conn: CardConnection,
    hsm: Hsm,
    transport: KeyRef,
    purchase: KeyRef,
    psam_serial: bytes,
    terminal_id: bytes,
    key_version: int,
) -> None:
    """Terminal number (EF 0016), then the purchase master key under the transport key."""
    if len(terminal_id) != 6:
        raise ValueError("a terminal number is 6 bytes")
    expect(conn, bytes([0x00, 0xD6, 0x96, 0x00, 0x06]) + terminal_id, "UPDATE 0016")
    await write_psam_purchase_key(conn, hsm, transport, purchase, psam_serial, key_version)


async def write_psam_purchase_key(
    conn: CardConnection, hsm: Hsm, transport: KeyRef, purchase: KeyRef, psam_serial: bytes,
    key_version: int,
) -> None:
    """A purchase master key version into a PSAM (an issued one too: a new card key version)
    under its transport key."""
    header = bytes([0x84, 0xD4, 0x01, key_version])
    attributes = bytes([PSAM_PURCHASE_USAGE]) + RIGHTS + bytes([key_version, ALG_3DES])
    path = CardKeyPath(transport, (card_factor(psam_serial),))
    apdu = await hsm.write_psam_key(path, purchase, challenge(conn), header, attributes)
    expect(conn, apdu, "WRITE KEY (purchase)")

"""The POS checks offline that the holder and health data on a card are the centre's
(specs/card-layout.md "Signatures"): it reads EF 0016 and records 1-2 of EF 001B (no PIN
needed), and after VERIFY EF 0019 and records 3-4, and verifies each signature with the
centre's published public keys (`medswitch keys public-key centre/CARD_SIGN`, one file a
version, given to the POS like its other keys: `medswitch sim pos --card-sign-key V:FILE`).

Nothing here asks the centre: a forged or altered file shows as "NOT signed by the centre".
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from messages.card_signatures import (
    DOMAIN_HEALTH,
    DOMAIN_HOLDER,
    HEALTH_RECORDS,
    HEALTH_SIGNED_BYTES,
    HOLDER_BYTES,
    HOLDER_RECORDS,
    VERSION_MAX,
    PublishedKey,
    public_key,
    read_signature_command,
    signed_version,
)
from switch.card_io.connection import ApduError, CardConnection, expect

READ_PUBLIC = bytes.fromhex("00B095001E")  # EF 0015: the application serial at bytes 10-19
READ_HOLDER = bytes([0x00, 0xB0, 0x96, 0x00, HOLDER_BYTES])
SW_OK = 0x9000
SW_ABSENT = (0x6A82, 0x6A83)  # a card without EF 001B (or the record)


class Verdict(enum.Enum):
    SIGNED = "signed"
    NO_SIGNATURE = "no signature on the card"
    BAD_SIGNATURE = "the signature does not verify"
    NO_KEY = "no published key of the centre configured"


class SignatureCheck(NamedTuple):
    verdict: Verdict
    version: int | None = None  # the published key's version that verified

    def line(self, what: str) -> str:
        if self.verdict is Verdict.SIGNED:
            return f"{what} signed by the centre (key v{self.version})"
        return f"{what} NOT signed by the centre ({self.verdict.value})"


def load_published_key(spec: str) -> PublishedKey:
    """``VERSION:FILE`` (the PEM `medswitch keys public-key` wrote): ValueError when the file is
    not an RSA-2048 public key or the version not 1-255."""
    version, sep, name = spec.partition(":")
    if not sep or not version.isdigit() or not 1 <= int(version) <= VERSION_MAX:
        raise ValueError(f"{spec!r}: give the key as VERSION:FILE, the version 1-{VERSION_MAX}")
    try:
        pem = Path(name).read_bytes()
    except OSError as error:
        raise ValueError(f"{name}: {error.strerror}") from None
    public_key(pem)  # refuses what is not the centre's kind of key
    return PublishedKey(int(version), pem)


def _signature(card: CardConnection, records: tuple[int, int]) -> bytes | None:
    parts = []
    for number in records:
        data, sw = card.transmit(read_signature_command(number))
        if sw in SW_ABSENT:
            return None
        if sw != SW_OK:
            raise ApduError(f"READ RECORD {number} of EF 001B", sw)
        parts.append(data)
    signature = b"".join(parts)
    return None if not any(signature) else signature


def _check(
    keys: Sequence[PublishedKey], domain: bytes, serial: bytes, data: bytes, signature: bytes | None
) -> SignatureCheck:
    if signature is None:
        return SignatureCheck(Verdict.NO_SIGNATURE)
    if not keys:
        return SignatureCheck(Verdict.NO_KEY)
    version = signed_version(keys, domain, serial, data, signature)
    if version is None:
        return SignatureCheck(Verdict.BAD_SIGNATURE)
    return SignatureCheck(Verdict.SIGNED, version)


def serial_of(card: CardConnection) -> bytes:
    """The application serial, from EF 0015 (in the application; no PIN needed)."""
    return expect(card, READ_PUBLIC, "READ 0015")[10:20]


def check_holder(card: CardConnection, keys: Sequence[PublishedKey]) -> SignatureCheck:
    """EF 0016 against records 1-2 of EF 001B; in the application, no PIN needed."""
    holder = expect(card, READ_HOLDER, "READ 0016")
    signature = _signature(card, HOLDER_RECORDS)
    return _check(keys, DOMAIN_HOLDER, serial_of(card), holder, signature)


def check_health(
    card: CardConnection, keys: Sequence[PublishedKey], ef0019: bytes
) -> SignatureCheck:
    """EF 0019 as read (after VERIFY) against records 3-4 of EF 001B."""
    signature = _signature(card, HEALTH_RECORDS)
    data = ef0019[:HEALTH_SIGNED_BYTES]
    return _check(keys, DOMAIN_HEALTH, serial_of(card), data, signature)

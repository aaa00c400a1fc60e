"""The centre's signatures over the card's holder and health data (specs/card-layout.md
"Signatures"): the signed messages, the card file EF 001B that holds the signatures, and the
offline check a POS or HIS makes with the centre's published public keys. Pure: no I/O.

A signed message is: domain (16 ASCII bytes) ‖ key version (1) ‖ application serial (10) ‖ the
file's bytes — EF 0016 whole (39 bytes) for the holder, EF 0019 bytes 0-91 (the data, without
the data check code) for the health data. The signature: RSA-2048, PKCS#1 v1.5, SHA-256, 256
bytes, on the card as two 128-byte records of EF 001B (holder: 1-2, health: 3-4). The card
does not say which key version signed: a verifier tries each published key, newest first,
with its version in the message.

>>> serial = bytes.fromhex("00003101000000000001")
>>> holder_message(serial, bytes(39), version=1)[:17]
b'MEDSWITCH HOLDER\\x01'
>>> len(health_message(serial, bytes(92), version=1))
119
>>> update_signature_command(3, bytes(128), chained=True)[:5].hex()
'14dc03dc84'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

EF_SIGNATURES = 0x1B  # SFI and file id 001B: linear fixed, 4 records
SIGNATURE_RECORD_BYTES = 128
SIGNATURE_RECORDS = 4
SIGNATURE_BYTES = 2 * SIGNATURE_RECORD_BYTES  # RSA-2048
HOLDER_RECORDS = (1, 2)  # readable without the PIN
HEALTH_RECORDS = (3, 4)  # readable after VERIFY
HOLDER_BYTES = 39  # EF 0016
HEALTH_SIGNED_BYTES = 92  # EF 0019 bytes 0-91
SERIAL_BYTES = 10
DOMAIN_HOLDER = b"MEDSWITCH HOLDER"
DOMAIN_HEALTH = b"MEDSWITCH HEALTH"
VERSION_MAX = 255
RSA_BITS = 2048
CLA_LAST, CLA_CHAINED = 0x04, 0x14  # ISO 7816 chaining bit: more of this script follows
_P2 = EF_SIGNATURES << 3 | 0x04  # P1 is the record number


class PublishedKey(NamedTuple):
    """One version of the centre's card signing public key, as `medswitch keys public-key`
    gives it (SubjectPublicKeyInfo PEM)."""

    version: int
    pem: bytes


def _message(domain: bytes, serial: bytes, data: bytes, size: int, version: int) -> bytes:
    if len(serial) != SERIAL_BYTES:
        raise ValueError(f"an application serial is {SERIAL_BYTES} bytes")
    if len(data) != size:
        raise ValueError(f"the signed file bytes are {size}, not {len(data)}")
    if not 1 <= version <= VERSION_MAX:
        raise ValueError(f"a signing key version is 1 to {VERSION_MAX}")
    return domain + bytes([version]) + serial + data


def holder_message(serial: bytes, ef0016: bytes, *, version: int) -> bytes:
    """What the centre signs for the cardholder file: 66 bytes."""
    return _message(DOMAIN_HOLDER, serial, ef0016, HOLDER_BYTES, version)


def health_message(serial: bytes, ef0019_first92: bytes, *, version: int) -> bytes:
    """What the centre signs for the health data: 119 bytes."""
    return _message(DOMAIN_HEALTH, serial, ef0019_first92, HEALTH_SIGNED_BYTES, version)


def public_key(pem: bytes) -> rsa.RSAPublicKey:
    """A published key; ValueError when it is not an RSA-2048 public key in PEM."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RSA_BITS:
        raise ValueError(f"the centre's signing key is RSA-{RSA_BITS}")
    return key


def verify(public_key_pem: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the centre's over ``message`` under that public key."""
    key = public_key(public_key_pem)
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def signed_version(
    keys: Sequence[PublishedKey], domain: bytes, serial: bytes, data: bytes, signature: bytes
) -> int | None:
    """The version of the published key the signature verifies under (None: none does)."""
    builders = {DOMAIN_HOLDER: holder_message, DOMAIN_HEALTH: health_message}
    if domain not in builders:
        raise ValueError(f"no signed message of domain {domain!r}")
    builder = builders[domain]
    for key in sorted(keys, key=lambda k: -k.version):
        if verify(key.pem, builder(serial, data, version=key.version), signature):
            return key.version
    return None


def split_signature(signature: bytes) -> tuple[bytes, bytes]:
    """The two records a signature is written as."""
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError(f"a signature is {SIGNATURE_BYTES} bytes")
    return signature[:SIGNATURE_RECORD_BYTES], signature[SIGNATURE_RECORD_BYTES:]


def update_signature_command(record: int, part: bytes, *, chained: bool) -> bytes:
    """UPDATE RECORD of EF 001B, line-protected (the MAC follows, counted in Lc): CLA `14`
    when more of the script follows, `04` for its last command."""
    if not 1 <= record <= SIGNATURE_RECORDS or len(part) != SIGNATURE_RECORD_BYTES:
        raise ValueError("a signature record is 1-4, of 128 bytes")
    cla = CLA_CHAINED if chained else CLA_LAST
    return bytes([cla, 0xDC, record, _P2, SIGNATURE_RECORD_BYTES + 4]) + part


def read_signature_command(record: int) -> bytes:
    """READ RECORD of EF 001B (records 3-4 need VERIFY)."""
    if not 1 <= record <= SIGNATURE_RECORDS:
        raise ValueError("a signature record is 1-4")
    return bytes([0x00, 0xB2, record, _P2, SIGNATURE_RECORD_BYTES])

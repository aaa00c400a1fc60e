"""Personal data at rest (names, ID numbers): sealed under a PERSONAL_DATA key, found again by
a keyed hash under a PERSONAL_INDEX key (DESIGN §4: keys never in clear outside hsm/).

Sealing is AES-256-GCM under a key derived from the stored key (HMAC-SHA256 with a label: the
stored key is a double-length DES key as every key of this HSM, its usage bound to this one
purpose), with a random 96-bit nonce and the record's context (e.g. ``cardholder|<id>``) as
associated data: a sealed value moved to another record does not open. A sealed value is
``01`` | nonce (12) | ciphertext | tag (16). The index is HMAC-SHA256 under its own derived key,
truncated to 16 bytes: equal inputs give equal indexes, and nothing else can be learnt from it
without the key.

>>> key = bytes(range(16))
>>> sealed = seal(key, bytes(12), b"cardholder|1", "310119800101123456".encode())
>>> open_sealed(key, b"cardholder|1", sealed).decode()
'310119800101123456'
>>> len(index(key, b"310119800101123456"))
16
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm.errors import InvalidInputError, KeyTamperedError

FORMAT = 1
NONCE_BYTES = 12
TAG_BYTES = 16
INDEX_BYTES = 16
DATA_BYTES_MAX = 4096  # a person's name and ID number: far less
CONTEXT_BYTES_MAX = 256
_SEAL_LABEL = b"medswitch personal data AES-256-GCM v1"
_INDEX_LABEL = b"medswitch personal index HMAC-SHA256 v1"


def _derived(key: bytes, label: bytes) -> bytes:
    return hmac.digest(key, label, "sha256")


def _check(context: bytes, data: bytes, data_bytes_max: int) -> None:
    if len(context) > CONTEXT_BYTES_MAX:
        raise InvalidInputError(f"personal data context over {CONTEXT_BYTES_MAX} bytes")
    if len(data) > data_bytes_max:
        raise InvalidInputError(f"personal data over {DATA_BYTES_MAX} bytes")


def seal(key: bytes, nonce: bytes, context: bytes, data: bytes) -> bytes:
    """``data`` sealed under ``key`` (a PERSONAL_DATA key) for ``context``."""
    _check(context, data, DATA_BYTES_MAX)
    if len(nonce) != NONCE_BYTES:
        raise InvalidInputError(f"a nonce is {NONCE_BYTES} bytes")
    sealed = AESGCM(_derived(key, _SEAL_LABEL)).encrypt(nonce, data, context)
    return bytes([FORMAT]) + nonce + sealed


def open_sealed(key: bytes, context: bytes, sealed: bytes) -> bytes:
    """The data `seal` sealed for ``context``; KeyTamperedError if it was altered, moved to
    another context or sealed under another key."""
    _check(context, sealed, 1 + NONCE_BYTES + DATA_BYTES_MAX + TAG_BYTES)
    if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES or sealed[0] != FORMAT:
        raise InvalidInputError("not a sealed personal value")
    nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return AESGCM(_derived(key, _SEAL_LABEL)).decrypt(nonce, body, context)
    except InvalidTag:
        raise KeyTamperedError("sealed personal data failed its integrity check") from None


def index(key: bytes, data: bytes) -> bytes:
    """The keyed hash of ``data`` under ``key`` (a PERSONAL_INDEX key): for equality lookups."""
    if len(data) > DATA_BYTES_MAX:
        raise InvalidInputError(f"personal data over {DATA_BYTES_MAX} bytes")
    return hmac.digest(_derived(key, _INDEX_LABEL), data, "sha256")[:INDEX_BYTES]

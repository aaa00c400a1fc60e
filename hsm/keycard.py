"""Custodian key cards (specs/key-ceremony.md §Custodian key cards): the HSM's side of putting
a custodian's component on a PIN-protected smart card and of reading it back, so that the
component crosses the reader only encrypted — to the card's own X25519 key when written, to a
one-time X25519 key of the reading HSM when read. Only this module and the card see it clear.

Both directions: X25519 shared secret → HKDF-SHA256 (no salt, info naming the direction) →
a 32-byte AES-GCM key; 12-byte nonce; the slot number (1 byte) as associated data.

>>> from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
>>> card = X25519PrivateKey.generate()
>>> part = Component(bytes(range(16)))
>>> sealed = seal_for_card(public_bytes(card), 1, part, bytes)
>>> len(sealed) == 32 + 12 + 16 + 16
True
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsm.errors import InvalidInputError, KeyTamperedError
from hsm.lmk import Component

INFO_WRITE = b"medswitch key card write v1"
INFO_READ = b"medswitch key card read v1"
PUBLIC_BYTES, NONCE_BYTES, TAG_BYTES = 32, 12, 16


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def session_key(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """The AES-GCM key both sides derive (the card simulator uses this function too)."""
    if len(peer_public) != PUBLIC_BYTES:
        raise InvalidInputError("an X25519 public key is 32 bytes")
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(hashes.SHA256(), 32, None, info).derive(shared)


def seal_for_card(
    card_public: bytes, slot: int, component: Component, random_bytes: Callable[[int], bytes]
) -> bytes:
    """WRITE COMPONENT data: one-time public key (32) | nonce (12) | AES-GCM(component)."""
    one_time = X25519PrivateKey.generate()
    nonce = random_bytes(NONCE_BYTES)
    key = session_key(one_time, card_public, INFO_WRITE)
    clear = bytes.fromhex(component.reveal().replace(" ", ""))
    return public_bytes(one_time) + nonce + AESGCM(key).encrypt(nonce, clear, bytes([slot]))


class ReadRequest:
    """A one-time key pair for one READ COMPONENT: its public half goes to the card; the
    answer opens only with the private half, which never leaves this object."""

    __slots__ = ("_private",)

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()

    def __repr__(self) -> str:
        return "ReadRequest()"

    @property
    def public(self) -> bytes:
        return public_bytes(self._private)

    def open(self, card_public: bytes, slot: int, answer: bytes, kcv: str) -> Component:
        """The component of the card's answer (nonce | AES-GCM), checked against its KCV."""
        if len(answer) < NONCE_BYTES + TAG_BYTES + 8:
            raise InvalidInputError("a key card's answer is too short")
        key = session_key(self._private, card_public, INFO_READ)
        try:
            clear = AESGCM(key).decrypt(answer[:NONCE_BYTES], answer[NONCE_BYTES:], bytes([slot]))
        except InvalidTag:
            raise KeyTamperedError("the key card's answer failed its integrity check") from None
        return Component.parse(clear.hex(), kcv)

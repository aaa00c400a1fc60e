"""Custodian key cards (specs/key-ceremony.md §Custodian key cards): the HSM's side of putting
a custodian's component on a PIN-protected smart card and of reading it back, so that the
component crosses the reader only encrypted — to the card's own X25519 key when written, to a
one-time X25519 key of the reading HSM when read. Only this module and the card see it clear.

A card is bound to one HSM at its initialisation: it keeps the HSM's Ed25519 identity key and
answers a read only when the request (one-time key and slot) is signed by it, so a card and its
PIN in another machine give nothing.

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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from hsm.errors import InvalidInputError, KeyTamperedError
from hsm.lmk import Component

INFO_WRITE = b"medswitch key card write v1"
INFO_READ = b"medswitch key card read v1"
READ_REQUEST_CONTEXT = b"medswitch key card read request v1"
SIGNATURE_BYTES = 64
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


def read_request_message(slot: int, one_time_public: bytes) -> bytes:
    """What the HSM signs for a read and the card verifies."""
    return READ_REQUEST_CONTEXT + bytes([slot]) + one_time_public


class HsmIdentity:
    """The HSM's own Ed25519 key, which key cards are bound to (a hardware HSM keeps it inside;
    the software HSM in its home, see switch.key_home). repr shows its fingerprint only."""

    __slots__ = ("_private",)

    def __init__(self, private: bytes) -> None:
        if len(private) != 32:
            raise InvalidInputError("an Ed25519 private key is 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(private)

    @classmethod
    def generate(cls) -> HsmIdentity:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    def private_bytes(self) -> bytes:
        """For the software HSM's home only."""
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"HsmIdentity({self.fingerprint})"


def fingerprint(public: bytes) -> str:
    """6 hex digits naming an identity key (SHA-256 of it), as a KCV names a key."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public)
    return digest.finalize()[:3].hex().upper()


class ReadRequest:
    """A one-time key pair for one READ COMPONENT, signed by the HSM's identity: its public
    half and the signature go to the card; the answer opens only with the private half, which
    never leaves this object."""

    __slots__ = ("_private", "data")

    def __init__(self, identity: HsmIdentity, slot: int) -> None:
        self._private = X25519PrivateKey.generate()
        one_time = public_bytes(self._private)
        self.data = one_time + identity.sign(read_request_message(slot, one_time))

    def __repr__(self) -> str:
        return "ReadRequest()"

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

"""The centre's card-data signing key (usage CARD_SIGN): RSA-2048, signatures PKCS#1 v1.5 with
SHA-256 (specs/card-layout.md "Signatures"), through `cryptography`. Pure: the key is held as
PKCS#8 DER bytes, which only hsm/ ever sees clear (at rest it is a TR-31 block under the LMK,
hsm.keyblock).

A key is named by its fingerprint, as a DES key by its KCV: the first 3 bytes of SHA-256 over
the public key's SubjectPublicKeyInfo DER, 6 upper-case hex digits. The published TEST ONLY key
(specs/card-layout.md "Golden traces") is known here by its whole SHA-256, so that an HSM whose
LMK is not TEST ONLY refuses it (`refuse_test_only`).

>>> key = load(generate())
>>> public_pem(key).startswith(b"-----BEGIN PUBLIC KEY-----")
True
>>> len(sign(key, b"message")) == SIGNATURE_BYTES
True
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hsm.errors import InvalidInputError, KeyTamperedError

RSA_BITS = 2048
PUBLIC_EXPONENT = 65537
SIGNATURE_BYTES = RSA_BITS // 8
# SHA-256 of the SubjectPublicKeyInfo DER of the TEST ONLY signing key published in
# specs/card-layout.md: stored only under the TEST ONLY LMK.
TEST_ONLY_PUBLIC_SHA256 = frozenset(
    {"C9D93FC97861122841303B90CECB6695571E6F04A7884CF4AA1E29B48BB1D8D4"}
)


def load(der: bytes) -> rsa.RSAPrivateKey:
    """The key of a PKCS#8 DER (checked: the costly part, done once per key in hsm.signing)."""
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise KeyTamperedError("not an RSA private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != RSA_BITS:
        raise KeyTamperedError(f"not an RSA-{RSA_BITS} private key")
    return key


def _spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate() -> bytes:
    """A new key pair (the operating system's randomness), as PKCS#8 DER."""
    key = rsa.generate_private_key(PUBLIC_EXPONENT, RSA_BITS)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def from_pem(pem: bytes) -> bytes:
    """A PEM private key (PKCS#8 or PKCS#1, unencrypted) as PKCS#8 DER; RSA-2048 only."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidInputError("not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != RSA_BITS:
        raise InvalidInputError(f"a card signing key is RSA-{RSA_BITS}")
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def private_fingerprint(der: bytes) -> str:
    return fingerprint(load(der))


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    return _sha256(_spki(key))[:3].hex().upper()


def is_test_only(der: bytes) -> bool:
    return _sha256(_spki(load(der))).hex().upper() in TEST_ONLY_PUBLIC_SHA256


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    """The public key as published: SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256 over ``message``: 256 bytes."""
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())

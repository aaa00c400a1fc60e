"""messages.card_signatures: the signed messages byte by byte, EF 001B's commands, and the
offline check — a signature verifies only over its own message, under the key of the version
the message names, and a malformed key is a configuration error, not a failed check."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from messages.card_signatures import (
    DOMAIN_HEALTH,
    DOMAIN_HOLDER,
    PublishedKey,
    health_message,
    holder_message,
    read_signature_command,
    signed_version,
    split_signature,
    update_signature_command,
    verify,
)

SERIAL = bytes.fromhex("00003101000000000001")
HOLDER = bytes(range(39))


def new_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    private = rsa.generate_private_key(65537, 2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, pem


def sign(private: rsa.RSAPrivateKey, message: bytes) -> bytes:
    return private.sign(message, padding.PKCS1v15(), hashes.SHA256())


def test_the_messages_are_domain_version_serial_file() -> None:
    message = holder_message(SERIAL, HOLDER, version=3)
    assert message == b"MEDSWITCH HOLDER" + b"\x03" + SERIAL + HOLDER and len(message) == 66
    health = health_message(SERIAL, bytes(92), version=255)
    assert health[:17] == b"MEDSWITCH HEALTH\xff" and health[17:27] == SERIAL
    for bad in (
        lambda: holder_message(SERIAL[:9], HOLDER, version=1),
        lambda: holder_message(SERIAL, HOLDER[:38], version=1),
        lambda: health_message(SERIAL, bytes(96), version=1),
        lambda: holder_message(SERIAL, HOLDER, version=0),
        lambda: holder_message(SERIAL, HOLDER, version=256),
    ):
        with pytest.raises(ValueError):
            bad()


def test_ef_001b_commands() -> None:
    first, second = split_signature(bytes(range(256)))
    assert first == bytes(range(128)) and second == bytes(range(128, 256))
    assert update_signature_command(1, first, chained=True)[:5] == bytes.fromhex("14DC01DC84")
    assert update_signature_command(4, second, chained=False)[:5] == bytes.fromhex("04DC04DC84")
    assert read_signature_command(3) == bytes.fromhex("00B203DC80")
    with pytest.raises(ValueError):
        update_signature_command(5, first, chained=False)
    with pytest.raises(ValueError):
        split_signature(bytes(255))


def test_a_signature_verifies_only_over_its_message_and_version() -> None:
    old, old_pem = new_key()
    new, new_pem = new_key()
    keys = [PublishedKey(1, old_pem), PublishedKey(2, new_pem)]
    signature = sign(old, holder_message(SERIAL, HOLDER, version=1))
    assert verify(old_pem, holder_message(SERIAL, HOLDER, version=1), signature)
    assert signed_version(keys, DOMAIN_HOLDER, SERIAL, HOLDER, signature) == 1
    assert signed_version(keys[1:], DOMAIN_HOLDER, SERIAL, HOLDER, signature) is None
    changed = HOLDER[:-1] + b"\xff"
    assert signed_version(keys, DOMAIN_HOLDER, SERIAL, changed, signature) is None
    assert signed_version(keys, DOMAIN_HEALTH, SERIAL, bytes(92), signature) is None
    mislabelled = sign(new, holder_message(SERIAL, HOLDER, version=1))  # v2's key, says v1
    assert signed_version(keys, DOMAIN_HOLDER, SERIAL, HOLDER, mislabelled) is None
    assert not verify(old_pem, holder_message(SERIAL, HOLDER, version=1), signature[:-1])
    with pytest.raises(ValueError):
        signed_version(keys, b"MEDSWITCH OTHER.", SERIAL, HOLDER, signature)


def test_what_is_not_the_centres_kind_of_key_is_refused() -> None:
    message = holder_message(SERIAL, HOLDER, version=1)
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for pem in (b"not a key", ec_pem):
        with pytest.raises(ValueError):
            verify(pem, message, bytes(256))

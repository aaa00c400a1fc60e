"""Personal data at rest through the HSM interface (both backends): sealed under a
PERSONAL_DATA key (AES-256-GCM, bound to its context), indexed under a PERSONAL_INDEX key,
each usage refusing the other's operations."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm import personal
from hsm.errors import InvalidInputError, KeyTamperedError, KeyUsageError
from hsm.interface import Hsm
from hsm.keys import KeyRef, KeyUsage
from tests.support.hsm_keys import NOW, Backend, clear

ID_NUMBER = b"310119800101123456"


def test_sealed_and_opened_in_context_only(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: dict[str, KeyRef]) -> None:
        key = await hsm.generate_key("centre/PERSONAL_DATA", KeyUsage.PERSONAL_DATA, now=NOW)
        context = b"cardholder|0000000001"
        sealed = await hsm.encrypt_personal(key, context, ID_NUMBER)
        assert ID_NUMBER not in sealed and len(sealed) == 1 + 12 + len(ID_NUMBER) + 16
        assert await hsm.encrypt_personal(key, context, ID_NUMBER) != sealed  # fresh nonce
        assert await hsm.decrypt_personal(key, context, sealed) == ID_NUMBER
        with pytest.raises(KeyTamperedError):  # moved to another record
            await hsm.decrypt_personal(key, b"cardholder|0000000002", sealed)
        altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
        with pytest.raises(KeyTamperedError):
            await hsm.decrypt_personal(key, context, altered)
        other = await hsm.generate_key("centre/PERSONAL_DATA", KeyUsage.PERSONAL_DATA, now=NOW)
        with pytest.raises(KeyTamperedError):  # the next version does not open the first's
            await hsm.decrypt_personal(other, context, sealed)
        with pytest.raises(KeyUsageError):  # a data key is no file or bill key
            await hsm.encrypt_data(key, b"x")
        with pytest.raises(KeyUsageError):
            await hsm.encrypt_personal(refs["bank/file"], context, b"x")
        with pytest.raises(InvalidInputError):
            await hsm.encrypt_personal(key, context, bytes(personal.DATA_BYTES_MAX + 1))

    backend.run(body)


def test_the_index_is_keyed_and_deterministic(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: dict[str, KeyRef]) -> None:
        key = await hsm.generate_key("centre/PERSONAL_INDEX", KeyUsage.PERSONAL_INDEX, now=NOW)
        first = await hsm.index_personal(key, ID_NUMBER)
        assert len(first) == 16 and await hsm.index_personal(key, ID_NUMBER) == first
        assert await hsm.index_personal(key, ID_NUMBER[:-1] + b"7") != first
        other = await hsm.generate_key("centre/PERSONAL_INDEX", KeyUsage.PERSONAL_INDEX, now=NOW)
        assert await hsm.index_personal(other, ID_NUMBER) != first
        with pytest.raises(KeyUsageError):
            await hsm.encrypt_personal(key, b"c", ID_NUMBER)
        with pytest.raises(KeyUsageError):
            await hsm.index_personal(refs["bank/file"], ID_NUMBER)

    backend.run(body)


def test_the_construction_as_the_spec_states_it() -> None:
    """specs/hsm-protocol.md X0/X4, computed here without hsm.personal's code."""
    key, nonce, context = clear("bank/file"), bytes(range(12)), b"cardholder|1"
    sealed = personal.seal(key, nonce, context, ID_NUMBER)
    aes = hmac.digest(key, b"medswitch personal data AES-256-GCM v1", "sha256")
    assert sealed == b"\x01" + nonce + AESGCM(aes).encrypt(nonce, ID_NUMBER, context)
    mac_key = hmac.digest(key, b"medswitch personal index HMAC-SHA256 v1", "sha256")
    assert personal.index(key, ID_NUMBER) == hmac.digest(mac_key, ID_NUMBER, "sha256")[:16]

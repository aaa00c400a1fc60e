"""The centre's card-data signing key (usage CARD_SIGN, hsm.signing) on every backend: generated
inside the HSM as an RSA-2048 key pair, its signatures verify with its published public key
(outside code, `cryptography` only), its private part never leaves — not by any export path,
not in clear at rest — and a chained script's command MAC has the sequence in its IV."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from hsm import pboc
from hsm.des import Des, kcv, xor
from hsm.errors import KeyTamperedError, KeyUsageError
from hsm.interface import Hsm
from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.policy import PolicyError
from hsm.soft import SoftHsm
from tests.support import psec_oracle as oracle
from tests.support.hsm_keys import NOW, Backend, clear

U = KeyUsage
SERIAL = bytes.fromhex("0011223344556677")


def test_a_signature_verifies_with_the_published_key_only(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: dict[str, KeyRef]) -> None:
        key = await hsm.generate_key("centre/CARD_SIGN", U.CARD_SIGN, now=NOW)
        assert (key.version, key.usage, len(key.kcv)) == (1, U.CARD_SIGN, 6)
        pem = await hsm.public_key(key)
        public = load_pem_public_key(pem)
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
        signature = await hsm.sign(key, b"MEDSWITCH HOLDER message")
        assert len(signature) == 256
        public.verify(signature, b"MEDSWITCH HOLDER message", padding.PKCS1v15(),
                      hashes.SHA256())  # fmt: skip
        assert await hsm.sign(key, b"MEDSWITCH HOLDER message") == signature  # deterministic
        second = await hsm.generate_key("centre/CARD_SIGN", U.CARD_SIGN, now=NOW)
        assert second.version == 2 and await hsm.public_key(second) != pem
        with pytest.raises(KeyUsageError):  # a DES key does not sign
            await hsm.sign(refs["card/maint"], b"x")
        with pytest.raises(KeyUsageError):  # nor does the signing key MAC
            await hsm.script_mac(CardKeyPath(key, (SERIAL,)), bytes(4), bytes.fromhex("04DC01DC04"))

    backend.run(body)


def test_a_chained_scripts_command_is_maced_with_its_sequence(backend: Backend) -> None:
    challenge = bytes.fromhex("11223344")
    command = bytes.fromhex("14DC03DC08") + bytes(4)

    async def body(hsm: Hsm, refs: dict[str, KeyRef]) -> None:
        key = CardKeyPath(refs["card/maint"], (SERIAL,))
        damk = pboc.diversify(Des(clear("card/maint")), SERIAL)
        padded = command + bytes.fromhex("80000000000000")
        for sequence in (0, 1, 7):
            got = await hsm.script_mac(key, challenge, command, sequence)
            folded = xor(padded, challenge + sequence.to_bytes(4, "big") + bytes(8))
            assert got == oracle.retail_mac(damk, folded, 1)[:4]
        assert await hsm.script_mac(key, challenge, command) == await hsm.script_mac(
            key, challenge, command, 0)  # fmt: skip

    backend.run(body)


def _lmk_parts() -> list[Component]:
    return [Component(secrets.token_bytes(16)) for _ in range(2)]


def _hsm(parts: list[Component], store: MemoryKeyStore) -> SoftHsm:
    return SoftHsm(Lmk(parts, kcv(combine(parts))), store)


def test_the_private_key_never_leaves_and_is_not_clear_at_rest() -> None:
    async def main() -> None:
        parts, store = _lmk_parts(), MemoryKeyStore()
        hsm = _hsm(parts, store)
        key = await hsm.generate_key("centre/CARD_SIGN", U.CARD_SIGN, now=NOW)
        kek = await hsm.generate_key("bureau/acme", U.BUREAU_KEK, now=NOW)
        with pytest.raises(KeyUsageError, match="not exportable"):
            await hsm.generate_key("centre/CARD_SIGN", U.CARD_SIGN, now=NOW, exportable=True)
        with pytest.raises(PolicyError, match="stays-in-hsm"):
            await hsm.export_key_block(key, kek)
        with pytest.raises(PolicyError, match="stays-in-hsm"):
            await hsm.export_key(key, kek)
        with pytest.raises(PolicyError, match="stays-in-hsm"):
            await hsm.export_components(key, 2)

        public = load_pem_public_key(await hsm.public_key(key))
        assert isinstance(public, rsa.RSAPublicKey)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
        assert key.kcv == digest.finalize()[:3].hex().upper()  # the key's fingerprint
        (stored,) = await store.list("centre/CARD_SIGN")
        assert stored.block[:1] == "B" and stored.block[5:9] == "S0RS"  # TR-31: RSA, sign only
        modulus = public.public_numbers().n.to_bytes(256, "big").hex().upper()
        assert modulus[:32] not in stored.block.upper() and "PRIVATE" not in stored.block

        # Under the same LMK, a record edited or a block altered does not sign.
        edited = replace(stored, kcv="000000")
        altered = replace(stored, block=stored.block[:-1] + ("0" if stored.block[-1] != "0"
                                                                else "1"))  # fmt: skip
        for bad in (edited, altered):
            other_store = MemoryKeyStore()
            await other_store.put(bad)
            other = _hsm(parts, other_store)
            with pytest.raises(KeyTamperedError):
                await other.sign(KeyRef("centre/CARD_SIGN", 1, U.CARD_SIGN), b"x")
            await other.close()
        again = _hsm(parts, store)  # the genuine record: the same key, loaded from the store
        assert await again.public_key(key) == await hsm.public_key(key)
        await hsm.close()
        await again.close()

    asyncio.run(main())

"""The soft HSM's signing keys (usage CARD_SIGN, hsm.rsakey): generated inside, stored as TR-31
blocks under the LMK like every key (hsm.keyblock), used to sign, and shown only as a public
key. No path lets the private part out (hsm.policy rule stays-in-hsm).
"""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from hsm import rsakey
from hsm.errors import InvalidInputError, KeyTamperedError, KeyUsageError
from hsm.keycache import KeyCache
from hsm.keys import KeyRef, KeyUsage

MESSAGE_BYTES_MAX = 4096  # a card file and its header: far less
KEYS_MAX = 64


class SigningKeys:
    def __init__(self, keys: KeyCache) -> None:
        self._keys = keys
        self._loaded: dict[tuple[str, int], tuple[str, rsa.RSAPrivateKey]] = {}

    def __repr__(self) -> str:
        return f"SigningKeys({len(self._loaded)} loaded)"

    def erase(self) -> None:
        self._loaded.clear()

    async def generate(self, alias: str, *, now: datetime, exportable: bool = False) -> KeyRef:
        """A new RSA-2048 key pair as the next version of `alias`."""
        if exportable:
            raise KeyUsageError("a CARD_SIGN key never leaves the HSM: it is not exportable")
        return await self._put(alias, rsakey.generate(), now)

    async def import_private(self, alias: str, pem: bytes, *, now: datetime) -> KeyRef:
        """A key pair given in clear (PEM): the published TEST ONLY key of the golden traces
        under the TEST ONLY LMK, refused under any other LMK; a production centre generates
        its key inside the HSM (`generate`)."""
        der = rsakey.from_pem(pem)
        if rsakey.is_test_only(der) and not self._keys.lmk_test_only:
            raise InvalidInputError(
                f"{alias}: the published TEST ONLY signing key is refused: this HSM's LMK is "
                "not TEST ONLY"
            )
        return await self._put(alias, der, now)

    async def _put(self, alias: str, der: bytes, now: datetime) -> KeyRef:
        ref = await self._keys.put_wrapped(alias, KeyUsage.CARD_SIGN, der, now)
        self._remember(ref, der)
        return ref

    async def _key(self, ref: KeyRef) -> rsa.RSAPrivateKey:
        ref.require(KeyUsage.CARD_SIGN)
        found = self._loaded.get((ref.alias, ref.version))
        if found is None:
            der = await self._keys.unwrapped(ref)  # checks the reference's fingerprint
            return self._remember(ref, der)
        fingerprint, key = found
        if ref.kcv and ref.kcv != fingerprint:
            raise KeyTamperedError(f"key {ref.alias} v{ref.version}: fingerprint differs")
        return key

    def _remember(self, ref: KeyRef, der: bytes) -> rsa.RSAPrivateKey:
        """Keep the parsed key: parsing checks it, which costs far more than a signature."""
        if len(self._loaded) >= KEYS_MAX:
            del self._loaded[next(iter(self._loaded))]
        key = rsakey.load(der)
        self._loaded[(ref.alias, ref.version)] = (rsakey.fingerprint(key), key)
        return key

    async def sign(self, ref: KeyRef, message: bytes) -> bytes:
        if not 1 <= len(message) <= MESSAGE_BYTES_MAX:
            raise InvalidInputError(f"a message to sign is 1 to {MESSAGE_BYTES_MAX} bytes")
        return rsakey.sign(await self._key(ref), message)

    async def public_key(self, ref: KeyRef) -> bytes:
        return rsakey.public_pem(await self._key(ref))

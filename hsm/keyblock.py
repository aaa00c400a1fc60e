"""Keys at rest: TR-31 version B key blocks under the LMK, through psec.

The exact usage, alias, version and creation time ride in proprietary optional blocks, and
the KCV in the standard KC block, so all are covered by the block's MAC: an edited index
record or block is refused (`KeyTamperedError`). The centre's RSA signing key (CARD_SIGN) is
stored the same way, its PKCS#8 DER as the block's key (algorithm `R`), its fingerprint
(hsm.rsakey) in proprietary block 05 instead of a KCV. psec uses `cryptography`'s deprecated
TripleDES location with 16-byte keys; exactly that warning is silenced around each psec call.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography.utils import CryptographyDeprecationWarning
from psec import tr31

from hsm import rsakey
from hsm.des import kcv
from hsm.errors import InvalidInputError, KeyTamperedError, KeyUsageError
from hsm.keys import TR31_ATTRIBUTES, KeyRef, KeyUsage

_USAGE, _ALIAS, _VERSION, _CREATED, _FINGERPRINT = "01", "02", "03", "04", "05"
_RSA = frozenset({KeyUsage.CARD_SIGN})


def check_value(usage: KeyUsage, key: bytes) -> str:
    """What names a key without showing it: the KCV, or an RSA key's fingerprint."""
    return rsakey.private_fingerprint(key) if usage in _RSA else kcv(key)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What a key store holds: the index fields and the wrapped block. No clear key."""

    alias: str
    version: int
    usage: KeyUsage
    kcv: str
    created_at: str  # ISO 8601, as passed in by the caller
    block: str  # TR-31 key block under the LMK

    @property
    def ref(self) -> KeyRef:
        return KeyRef(self.alias, self.version, self.usage, self.kcv)


@contextmanager
def _psec_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
        yield


def wrap(
    lmk: bytes, ref: KeyRef, key: bytes, created_at: str, *, exportable: bool = False
) -> StoredKey:
    """Wrap a clear key under the LMK with its usage bound; `exportable` sets the block's
    exportability to "E" (hsm.policy), otherwise it is the usage's default."""
    usage_code, mode, exportability = TR31_ATTRIBUTES[ref.usage]
    algorithm = "R" if ref.usage in _RSA else "T"
    header = tr31.Header(
        "B", usage_code, algorithm, mode, "00", "E" if exportable else exportability
    )
    header.blocks[_USAGE] = ref.usage.value
    header.blocks[_ALIAS] = ref.alias
    header.blocks[_VERSION] = str(ref.version)
    header.blocks[_CREATED] = created_at
    check = check_value(ref.usage, key)
    if ref.usage in _RSA:
        header.blocks[_FINGERPRINT] = check
    else:
        header.blocks["KC"] = "00" + check  # KC block: 00 = legacy KCV (encrypt zeros)
    with _psec_quiet():
        block = tr31.KeyBlock(lmk, header).wrap(key)
    return StoredKey(ref.alias, ref.version, ref.usage, check, created_at, block)


def unwrap(lmk: bytes, stored: StoredKey, expected: KeyRef) -> bytes:
    """Check the block's MAC, that it matches its record and the reference; return the key."""
    where = f"key {expected.alias} v{expected.version}"
    try:
        with _psec_quiet():
            kb = tr31.KeyBlock(lmk)
            key: bytes = kb.unwrap(stored.block)
    except (tr31.KeyBlockError, tr31.HeaderError, ValueError):
        raise KeyTamperedError(f"{where}: key block failed its integrity check") from None
    blocks = kb.header.blocks
    bound = (
        blocks.get(_USAGE),
        blocks.get(_ALIAS),
        blocks.get(_VERSION),
        blocks.get(_FINGERPRINT, "") if stored.usage in _RSA else blocks.get("KC", "")[2:],
    )
    record = (stored.usage.value, stored.alias, str(stored.version), stored.kcv)
    if bound != record or check_value(stored.usage, key) != stored.kcv:
        raise KeyTamperedError(f"{where}: key block does not match its record")
    if (stored.alias, stored.version) != (expected.alias, expected.version):
        raise KeyTamperedError(f"{where}: the store returned another key")
    if stored.usage is not expected.usage:
        raise KeyUsageError(
            f"{where} is {stored.usage.value}, referenced as {expected.usage.value}"
        )
    if expected.kcv and expected.kcv != stored.kcv:
        raise KeyTamperedError(f"{where}: check value differs from the reference")
    return key


EXPORTABILITY_AT = 11  # TR-31 header: B | length(4) | usage(2) | algorithm | mode | version(2) | E


def exportable(stored: StoredKey) -> bool:
    """Whether the key was made exportable: its block's exportability byte (covered by the
    block's MAC, which `unwrap` checks first)."""
    return stored.block[EXPORTABILITY_AT : EXPORTABILITY_AT + 1] == "E"


@dataclass(frozen=True, slots=True)
class TransportedKey:
    """A key read from a TR-31 block under a transport key (hsm/ only: holds the clear key)."""

    ref: KeyRef
    key: bytes

    def __repr__(self) -> str:
        return f"TransportedKey({self.ref!r})"


def wrap_transport(kek: bytes, ref: KeyRef, key: bytes) -> str:
    """The key as it leaves for an outside party: a TR-31 version B block under the transport
    key, not exportable again ("N"), its usage, alias, version and KCV bound in the header."""
    usage_code, mode, _ = TR31_ATTRIBUTES[ref.usage]
    header = tr31.Header("B", usage_code, "T", mode, "00", "N")
    header.blocks[_USAGE] = ref.usage.value
    header.blocks[_ALIAS] = ref.alias
    header.blocks[_VERSION] = str(ref.version)
    header.blocks["KC"] = "00" + kcv(key)
    with _psec_quiet():
        block: str = tr31.KeyBlock(kek, header).wrap(key)
    return block


def unwrap_transport(kek: bytes, block: str) -> TransportedKey:
    """The key of a block `wrap_transport` made; KeyTamperedError when it fails its MAC or
    its bound check value, InvalidInputError when a bound field is missing."""
    try:
        with _psec_quiet():
            kb = tr31.KeyBlock(kek)
            key: bytes = kb.unwrap(block)
    except (tr31.KeyBlockError, tr31.HeaderError, ValueError):
        raise KeyTamperedError("key block failed its integrity check under that KEK") from None
    blocks = kb.header.blocks
    try:
        usage = KeyUsage(blocks[_USAGE])
        alias, version, check = blocks[_ALIAS], int(blocks[_VERSION]), blocks["KC"][2:]
    except (KeyError, ValueError):
        raise InvalidInputError("key block lacks its usage, alias, version or KCV") from None
    if kcv(key) != check:
        raise KeyTamperedError(f"key block {alias} v{version}: check value differs")
    return TransportedKey(KeyRef(alias, version, usage, check), key)

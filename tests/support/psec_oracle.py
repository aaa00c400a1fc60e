"""psec as an independent oracle for tests, with exactly its cryptography deprecation warning
silenced (it still uses the old TripleDES location and 8/16-byte keys)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography.utils import CryptographyDeprecationWarning

T = TypeVar("T")


def quiet(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
        return fn(*args, **kwargs)


def kcv(key: bytes, length: int = 3) -> str:
    from psec import des

    return quiet(des.generate_kcv, key, length).hex().upper()


def cbc_mac(key: bytes, data: bytes, padding: int) -> bytes:
    from psec import mac

    return quiet(mac.generate_cbc_mac, key, data, padding)


def retail_mac(key: bytes, data: bytes, padding: int) -> bytes:
    from psec import mac

    return quiet(mac.generate_retail_mac, key[:8], key[8:], data, padding)


def pinblock0(pin: str, pan: str) -> bytes:
    from psec import pinblock

    return quiet(pinblock.encode_pinblock_iso_0, pin, pan)


def pin_from_block0(block: bytes, pan: str) -> str:
    from psec import pinblock

    return quiet(pinblock.decode_pinblock_iso_0, block, pan)


def tdes_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    from psec import des

    return quiet(des.encrypt_tdes_ecb, key, data)


def tdes_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    from psec import des

    return quiet(des.decrypt_tdes_ecb, key, data)

"""CUP POS sign-on field 62: working keys under the TMK with 4-byte check values (ref §2.5).

Layouts: 24 = PIK(8) CV MAK(8) CV; 40 = PIK(16) CV MAK(8) 00×8 CV; 60 = 40 + TDK(16) CV.
Each key is encrypted under the TMK block by block (ECB); the check value is E(key, 00×8)[:4].
"""

from __future__ import annotations

from dataclasses import dataclass

from hsm.des import ZERO8, Des
from hsm.errors import InvalidInputError, KcvMismatchError

LAYOUTS = (24, 40, 60)


@dataclass(frozen=True, slots=True, repr=False)
class WorkingKeys:
    """Clear working keys; lives only inside hsm/. repr shows no key bytes."""

    pik: bytes
    mak: bytes
    tdk: bytes | None

    def __repr__(self) -> str:
        return "WorkingKeys(<clear keys hidden>)"


def key_lengths(layout: int) -> tuple[int, int, int]:
    """(PIK, MAK, TDK) lengths for a layout; TDK 0 when absent."""
    if layout == 24:
        return 8, 8, 0
    if layout == 40:
        return 16, 8, 0
    if layout == 60:
        return 16, 8, 16
    raise InvalidInputError(f"field 62 layout must be one of {LAYOUTS}")


def check_value(key: bytes) -> bytes:
    return Des(key).encrypt_ecb(ZERO8)[:4]


def build_field62(tmk: Des, keys: WorkingKeys) -> bytes:
    out = tmk.encrypt_ecb(keys.pik) + check_value(keys.pik) + tmk.encrypt_ecb(keys.mak)
    if len(keys.pik) == 16:
        out += bytes(8)
    out += check_value(keys.mak)
    if keys.tdk is not None:
        out += tmk.encrypt_ecb(keys.tdk) + check_value(keys.tdk)
    return out


def parse_field62(tmk: Des, field62: bytes) -> WorkingKeys:
    """Decrypt the working keys and check each against its check value."""
    pik_len, _, tdk_len = key_lengths(len(field62))
    pos = 0

    def take(length: int, name: str) -> bytes:
        nonlocal pos
        key = tmk.decrypt_ecb(field62[pos : pos + length])
        cv = field62[pos + length : pos + length + 4]
        pos += length + 4
        if check_value(key) != cv:
            raise KcvMismatchError(f"{name} check value in field 62 does not match")
        return key

    pik = take(pik_len, "PIK")
    mak_enc = field62[pos : pos + 8]
    pos += 16 if pik_len == 16 else 8
    mak = tmk.decrypt_ecb(mak_enc)
    if check_value(mak) != field62[pos : pos + 4]:
        raise KcvMismatchError("MAK check value in field 62 does not match")
    pos += 4
    tdk = take(tdk_len, "TDK") if tdk_len else None
    return WorkingKeys(pik, mak, tdk)

"""DES / 3DES through `cryptography`'s decrepit TripleDES, always with 24-byte keys.

A `Des` object keeps its cipher contexts for the life of the key (DESIGN §6): ECB contexts are
stateless across whole blocks, and the CBC-MAC context is reused by folding its previous output
block into the next message's first block, so a MAC costs one `update` call. A `Des` (and so
a SoftHsm) belongs to one thread: the event loop that owns it.

>>> Des(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")).kcv()
'08D7B4'
>>> adjust_parity(bytes.fromhex("1133557799BBDDFF")).hex().upper()
'1032547698BADCFE'
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, modes

from hsm.errors import InvalidInputError

ZERO8 = bytes(8)
KEY_LENGTHS = (8, 16, 24)


def expand_key(key: bytes) -> bytes:
    """8 → K|K|K, 16 → K1|K2|K1, 24 as is: the 24-byte form TripleDES takes without warnings."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    if len(key) == 24:
        return key
    raise InvalidInputError(f"DES key must be 8, 16 or 24 bytes, not {len(key)}")


def xor(a: bytes, b: bytes) -> bytes:
    """XOR of two byte strings of the same length."""
    if len(a) != len(b):
        raise InvalidInputError("xor of unequal lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def adjust_parity(key: bytes) -> bytes:
    """Force odd parity on every byte (the low bit is the parity bit)."""
    out = bytearray(key)
    for i, byte in enumerate(out):
        if bin(byte).count("1") % 2 == 0:
            out[i] = byte ^ 1
    return bytes(out)


def has_odd_parity(key: bytes) -> bool:
    return all(bin(byte).count("1") % 2 == 1 for byte in key)


class Des:
    """One DES or 3DES key with cached cipher contexts. Never shows the key."""

    __slots__ = (
        "_cbc",
        "_cbc_dec",
        "_chain",
        "_cipher",
        "_dec_chain",
        "_ecb_dec",
        "_ecb_enc",
        "key_length",
    )

    def __init__(self, key: bytes) -> None:
        self.key_length = len(key)
        self._cipher = TripleDES(expand_key(key))
        # Contexts are made on first use: a session key only ever needs the CBC one.
        self._ecb_enc: CipherContext | None = None
        self._ecb_dec: CipherContext | None = None
        self._cbc: CipherContext | None = None
        self._chain = 0  # the CBC context's current chaining block, as an int
        self._cbc_dec: CipherContext | None = None
        self._dec_chain = 0  # the last cipher block the CBC decryptor was given, as an int

    def __repr__(self) -> str:
        return f"Des(<{self.key_length}-byte key>)"

    def encrypt_ecb(self, data: bytes) -> bytes:
        if len(data) % 8:  # _check_blocks, inline: two per CUP MAC
            _check_blocks(data)
        if self._ecb_enc is None:
            self._ecb_enc = Cipher(self._cipher, modes.ECB()).encryptor()
        return self._ecb_enc.update(data)

    def decrypt_ecb(self, data: bytes) -> bytes:
        _check_blocks(data)
        if self._ecb_dec is None:
            self._ecb_dec = Cipher(self._cipher, modes.ECB()).decryptor()
        return self._ecb_dec.update(data)

    def cbc_last(self, data: bytes, iv: bytes = ZERO8) -> bytes:
        """Last block of the CBC encryption of `data` (already padded) under `iv`: a CBC-MAC."""
        if not data or len(data) % 8:
            _check_blocks(data)
            raise InvalidInputError("CBC-MAC of empty data")
        cbc = self._cbc
        if cbc is None:
            cbc = self._cbc = Cipher(self._cipher, modes.CBC(ZERO8)).encryptor()
        # The reused context chains from its previous output; cancel it and apply our IV.
        first = int.from_bytes(data[:8], "big") ^ self._chain
        if iv is not ZERO8:
            first ^= int.from_bytes(iv, "big")
        last = cbc.update(first.to_bytes(8, "big") + data[8:])[-8:]
        self._chain = int.from_bytes(last, "big")
        return last

    def encrypt_cbc(self, data: bytes, iv: bytes = ZERO8) -> bytes:
        """CBC encryption under `iv`, through the CBC-MAC's reused context (its chaining block
        cancelled in the first block, as there)."""
        if len(data) % 8:
            _check_blocks(data)
        if not data:
            return b""
        cbc = self._cbc
        if cbc is None:
            cbc = self._cbc = Cipher(self._cipher, modes.CBC(ZERO8)).encryptor()
        first = int.from_bytes(data[:8], "big") ^ self._chain
        if iv is not ZERO8:
            first ^= int.from_bytes(iv, "big")
        out = cbc.update(first.to_bytes(8, "big") + data[8:])
        self._chain = int.from_bytes(out[-8:], "big")
        return out

    def decrypt_cbc(self, data: bytes, iv: bytes = ZERO8) -> bytes:
        """CBC decryption under `iv` with a reused context: it XORs the first block with the
        last cipher block it was given before, which is swapped for `iv` here."""
        if len(data) % 8:
            _check_blocks(data)
        if not data:
            return b""
        cbc = self._cbc_dec
        if cbc is None:
            cbc = self._cbc_dec = Cipher(self._cipher, modes.CBC(ZERO8)).decryptor()
        out = cbc.update(data)
        first = int.from_bytes(out[:8], "big") ^ self._dec_chain
        if iv is not ZERO8:
            first ^= int.from_bytes(iv, "big")
        self._dec_chain = int.from_bytes(data[-8:], "big")
        return first.to_bytes(8, "big") + out[8:]

    def kcv(self, length: int = 3) -> str:
        """Key check value: leading bytes of E(K, 00×8), uppercase hex (6H by default)."""
        return self.encrypt_ecb(ZERO8)[:length].hex().upper()


def _check_blocks(data: bytes) -> None:
    if len(data) % 8:
        raise InvalidInputError(f"data length {len(data)} is not a multiple of 8")


def kcv(key: bytes, length: int = 3) -> str:
    """KCV of a clear key (cold path).

    >>> kcv(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), 4)
    '08D7B4FB'
    """
    return Des(key).kcv(length)

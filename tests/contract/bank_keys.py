"""A bank host's zone key change as specs/bank-interface.md describes F48 ("Private fields",
"Key exchange"): keys under the link's ZMK by two-key triple-DES ECB, their 6H KCVs, the
``USAGE=KEY/KCV`` items of the request and the ``USAGE=KCV`` items of the reply. Written from
the spec alone; imports nothing of medswitch."""

from __future__ import annotations

from dataclasses import dataclass

from tests.contract.wire import tdes_ecb

ORDER = ("ZAK", "ZPK", "FILE")


def kcv(key: bytes) -> str:
    """The first 3 bytes of the key's triple-DES encryption of 8 zero bytes, 6 upper-case hex."""
    return tdes_ecb(key, bytes(8))[:3].hex().upper()


def odd_parity(key: bytes) -> bytes:
    return bytes(b & 0xFE | (bin(b & 0xFE).count("1") + 1) % 2 for b in key)


def offer(zmk: bytes, keys: dict[str, bytes]) -> str:
    """The request's F48: each key under the ZMK (ECB, block by block), hex, then its KCV."""
    return ";".join(f"{usage}={tdes_ecb(zmk, keys[usage]).hex().upper()}/{kcv(keys[usage])}"
                    for usage in ORDER if usage in keys)


@dataclass(frozen=True, slots=True)
class Offered:
    keys: dict[str, bytes]  # usage → the clear key (odd parity)
    kcvs: dict[str, str]  # usage → the KCV the sender wrote


def take(zmk: bytes, field48: str) -> Offered:
    """A request's F48 read as the spec writes it; AssertionError when it breaks the layout."""
    keys, kcvs = {}, {}
    for item in field48.split(";"):
        usage, equals, rest = item.partition("=")
        hex_key, slash, check = rest.partition("/")
        assert equals and slash and usage in ORDER and usage not in keys, item
        assert len(hex_key) % 16 == 0 and len(check) == 6, item
        keys[usage] = odd_parity(tdes_ecb(zmk, bytes.fromhex(hex_key), decrypt=True))
        kcvs[usage] = check.upper()
    assert "ZAK" in keys, field48
    return Offered(keys, kcvs)


def answered(field48: str) -> dict[str, str]:
    """A reply's F48: ``USAGE=KCV`` items → usage: KCV."""
    found = {}
    for item in field48.split(";"):
        usage, _, check = item.partition("=")
        assert usage in ORDER and len(check) == 6, item
        found[usage] = check
    return found

"""Field 63's cipher, from specs/terminal-interface.md alone.

A contract test: it reads the spec's worked example and recomputes it with `cryptography`,
importing nothing of medswitch, as a POS vendor's own code would."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, modes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore

SPEC = Path(__file__).resolve().parents[2] / "specs" / "terminal-interface.md"


def _example() -> dict[str, bytes]:
    text = " ".join(SPEC.read_text(encoding="utf-8").split())
    found = re.search(
        r"TDK `([0-9A-F]{32})`, plaintext `([0-9A-F ]+)` .*? → padded `([0-9A-F]+)` "
        r"→ field 63 `([0-9A-F]+)`",
        text,
    )
    assert found, "the field 63 worked example is missing from the spec"
    tdk, plain, padded, cipher = found.groups()
    return {
        "tdk": bytes.fromhex(tdk),
        "plain": bytes.fromhex(plain.replace(" ", "")),
        "padded": bytes.fromhex(padded),
        "cipher": bytes.fromhex(cipher),
    }


def _pad_method_2(data: bytes) -> bytes:
    return data + b"\x80" + b"\x00" * ((-len(data) - 1) % 8)


def test_field63_is_3des_cbc_zero_iv_with_method_2_padding() -> None:
    example = _example()
    assert _pad_method_2(example["plain"]) == example["padded"]
    key = example["tdk"] + example["tdk"][:8]  # two-key 3DES as three keys: K1 K2 K1
    encryptor = Cipher(TripleDES(key), modes.CBC(bytes(8))).encryptor()
    assert encryptor.update(example["padded"]) + encryptor.finalize() == example["cipher"]


def test_ecb_would_differ() -> None:
    """The example tells the two modes apart (its plaintext is two blocks)."""
    example = _example()
    encryptor = Cipher(TripleDES(example["tdk"] + example["tdk"][:8]), modes.ECB()).encryptor()
    assert encryptor.update(example["padded"]) + encryptor.finalize() != example["cipher"]

"""ISO 9797-1 padding methods.

>>> pad_method_2(bytes(8)).hex()
'00000000000000008000000000000000'
>>> pad_method_1(b"abc").hex()
'6162630000000000'
>>> unpad_method_2(pad_method_2(b"abc"))
b'abc'
"""

from __future__ import annotations

from hsm.errors import InvalidInputError


def pad_method_1(data: bytes) -> bytes:
    """Zeros up to a multiple of 8; nothing when aligned (an empty message gets one block)."""
    if data and len(data) % 8 == 0:
        return data
    return data + bytes(8 - len(data) % 8)


def pad_method_2(data: bytes) -> bytes:
    """0x80 then zeros; always appended, also when the data is already aligned."""
    return data + b"\x80" + bytes(7 - len(data) % 8)


def unpad_method_2(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) > 7:
        raise InvalidInputError("bad ISO 9797-1 method 2 padding")
    return stripped[:-1]

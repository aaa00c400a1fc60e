"""ISO 9564 format 0 (ANSI X9.8) PIN blocks. Clear PINs and blocks exist only inside hsm/.

>>> encode_format0("1234", "5544332211009966").hex().upper()  # V10
'041277CDDEEFF669'
>>> decode_format0(bytes.fromhex("041277CDDEEFF669"), "5544332211009966")
'1234'
"""

from __future__ import annotations

from hsm.errors import InvalidInputError, PinBlockError


def pan_block(pan: str) -> bytes:
    """0000 || the 12 rightmost PAN digits excluding the check digit."""
    if not pan.isdigit() or len(pan) < 13:
        raise InvalidInputError("PAN must be at least 13 digits")
    return bytes.fromhex("0000" + pan[-13:-1])


def encode_format0(pin: str, pan: str) -> bytes:
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise InvalidInputError("PIN must be 4 to 12 digits")
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    return _xor8(pin_field, pan_block(pan))


def decode_format0(block: bytes, pan: str) -> str:
    if len(block) != 8:
        raise InvalidInputError("a PIN block is 8 bytes")
    digits = _xor8(block, pan_block(pan)).hex().upper()
    length = int(digits[1], 16)
    if digits[0] != "0" or not 4 <= length <= 12:
        raise PinBlockError("PIN block is not ISO 9564 format 0")
    pin, fill = digits[2 : 2 + length], digits[2 + length :]
    if not pin.isdigit() or fill != "F" * len(fill):
        raise PinBlockError("PIN block is not ISO 9564 format 0")
    return pin


def _xor8(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(8, "big")

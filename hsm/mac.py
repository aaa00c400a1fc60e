"""MAC algorithms: ISO 9797-1 alg 1 (X9.9) and alg 3 (X9.19), the CUP-ECB POS MAC, the PBOC
DES MAC and the PBOC line-protection (secure messaging) MAC.

Functions take `Des` objects so the caller keeps contexts per key (DESIGN §6).

>>> k = Des(bytes.fromhex("0123456789ABCDEF"))
>>> iso9797_alg1(k, b"7654321 Now is the time for ").hex().upper()  # FIPS 113
'F1D30F6849312CA4'
>>> sk = Des(bytes.fromhex("9B1D924E05595603"))  # V1 session key
>>> pboc_mac(sk, bytes.fromhex("000000000000100001001122334455")).hex().upper()
'2988AE5A'
"""

from __future__ import annotations

from hsm.des import ZERO8, Des
from hsm.errors import InvalidInputError
from hsm.padding import pad_method_1, pad_method_2


def iso9797_alg1(key: Des, data: bytes, *, padding: int = 1, iv: bytes = ZERO8) -> bytes:
    """ISO 9797-1 MAC algorithm 1 (X9.9 with a single-DES key): the last CBC block, 8 bytes."""
    return key.cbc_last(_pad(data, padding), iv)


def iso9797_alg3(
    left: Des, full: Des, data: bytes, *, padding: int = 1, iv: bytes = ZERO8
) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (X9.19 retail MAC), 8 bytes.

    `left` is the single-DES key KL, `full` the 3DES key KL|KR: single-DES CBC over all blocks
    but the last, then the last block through 3DES (E_KL(D_KR(E_KL(x))) is exactly alg 3's
    final transformation applied to the last CBC step).
    """
    if left.key_length != 8 or full.key_length != 16:
        raise InvalidInputError("alg 3 needs an 8-byte left half and the 16-byte key")
    padded = _pad(data, padding)
    chain = iv if len(padded) == 8 else left.cbc_last(padded[:-8], iv)
    last = int.from_bytes(chain, "big") ^ int.from_bytes(padded[-8:], "big")
    return full.encrypt_ecb(last.to_bytes(8, "big"))


def cup_ecb(key: Des, mab: bytes) -> bytes:
    """The CUP POS "ECB" MAC of field 64, as the 8 ASCII hex characters that go on the wire.

    Zero-pad when unaligned; XOR all blocks; hex the result; encrypt the first 8 hex chars,
    XOR with the last 8, encrypt again; the first 4 bytes as uppercase hex. The two
    encryptions are the CBC encryption of the 16 hex characters under a zero IV: one call of
    the key's CBC context instead of two ECB calls and the XOR between them.
    """
    hexed = xor_blocks(mab).to_bytes(8, "big").hex().upper().encode()
    return key.cbc_last(hexed)[:4].hex().upper().encode()


def xor_blocks(data: bytes) -> int:
    """The XOR of `data`'s 8-byte blocks (the last zero-padded), folding the upper blocks onto
    the lower ones as one integer: log2(blocks) big-integer steps instead of a step per block.

    >>> hex(xor_blocks(bytes.fromhex("0102030405060708" "1000000000000000" "ff")))
    '0xee02030405060708'
    """
    blocks = -(-len(data) // 8)
    acc = int.from_bytes(data, "big") << (8 * (blocks * 8 - len(data)))
    while blocks > 1:
        low = blocks - blocks // 2
        mask = _LOW_BLOCKS[low] if low < _LOW_BLOCKS_KEPT else (1 << (64 * low)) - 1
        acc = (acc >> (64 * low)) ^ (acc & mask)
        blocks = low
    return acc


# The mask of the lower n blocks, made once for messages up to 64 blocks (a quarter of
# xor_blocks' time went into making them).
_LOW_BLOCKS_KEPT = 65
SEQUENCE_MAX = 0xFFFFFFFF  # a chained script's command number: 4 bytes of the IV
_LOW_BLOCKS = tuple((1 << (64 * n)) - 1 for n in range(_LOW_BLOCKS_KEPT))


def pboc_mac(key: Des, data: bytes, iv: bytes = ZERO8) -> bytes:
    """PBOC ED/EP "DES MAC": alg 1 single DES, pad method 2 always appended, leftmost 4 bytes."""
    return key.cbc_last(pad_method_2(data), iv)[:4]


def line_protection_mac(
    left: Des, full: Des | None, challenge: bytes, command: bytes, sequence: int = 0
) -> bytes:
    """Secure-messaging MAC (4 bytes) over an APDU with IV = challenge(4) || sequence(4), the
    sequence 0 but for the later commands of a chained script.

    An 8-byte key (`full` None) uses the PBOC DES MAC; a 16-byte key uses alg 3. Both pad with
    method 2, always appended.
    """
    if len(challenge) != 4:
        raise InvalidInputError("a card challenge is 4 bytes")
    if not 0 <= sequence <= SEQUENCE_MAX:
        raise InvalidInputError(f"a script's command sequence is 0 to {SEQUENCE_MAX}")
    iv = challenge + sequence.to_bytes(4, "big")
    if full is None:
        return pboc_mac(left, command, iv)
    return iso9797_alg3(left, full, command, padding=2, iv=iv)[:4]


def _pad(data: bytes, padding: int) -> bytes:
    if padding == 1:
        return pad_method_1(data)
    if padding == 2:
        return pad_method_2(data)
    raise InvalidInputError(f"padding method {padding} is not supported")

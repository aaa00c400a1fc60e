"""The virtual card's security commands: the PIN (VERIFY, CHANGE, RELOAD, UNBLOCK), line
protection (a MAC under IV = challenge || 00000000, reference §1.2), secure-messaging WRITE
KEY under the master control key, and the application/card blocks.

WRITE KEY takes exactly what `Hsm.write_card_key` builds: `84 D4 P1 P2 Lc enc(attributes ||
key) MAC`, encrypted and MACed under the card's master control key, with P2 the key index and
attributes `type(1) | use right(1) | change right(1) | version(1) | algorithm(1)`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from hsm import cardcrypto, mac, pboc
from hsm.des import Des
from hsm.errors import InvalidInputError
from simulators.card.apdu import (
    SW_APP_LOCKED_PERMANENT,
    SW_AUTH_BLOCKED,
    SW_CONDITIONS,
    SW_MAC_INVALID,
    SW_PIN_TRIES_BASE,
    SW_REFERENCE_DATA_INVALID,
    SW_REFERENCE_NOT_FOUND,
    SW_SM_DATA_INCORRECT,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Apdu,
    CardStatus,
    split_mac,
)
from simulators.card.state import (
    BLOCK_NONE,
    BLOCK_PERMANENT,
    BLOCK_TEMPORARY,
    KEY_APP_MAINT,
    KEY_CONTROL,
    KEY_PIN_RELOAD,
    KEY_PIN_UNBLOCK,
    KEY_TYPES,
    CardKey,
    CardState,
)

Commit = Callable[[Callable[[], None]], None]
KEY_BYTES = 16
ATTRIBUTE_BYTES = 5


def check_line_mac(key: bytes, challenge: bytes | None, apdu: Apdu, sequence: int = 0) -> bytes:
    """Verify a line-protected command's MAC (IV challenge ‖ `sequence`: the command's number
    in a chained script); returns its data without the MAC."""
    if challenge is None:
        raise CardStatus(SW_REFERENCE_DATA_INVALID)
    body, given = split_mac(apdu)
    expected = cardcrypto.line_mac(key, challenge[:4], body, sequence)
    if not hmac.compare_digest(expected, given):
        raise CardStatus(SW_SM_DATA_INCORRECT)
    return apdu.data[:-4]


def maintenance_key(state: CardState) -> bytes:
    damk = state.any_key(KEY_APP_MAINT, 0)
    if damk is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    return damk.value


def verify_pin(state: CardState, apdu: Apdu, commit: Commit) -> bool:
    """VERIFY: True when the PIN matches; 63Cx / 6983 otherwise (the try counter persists)."""
    if apdu.p1 != 0 or apdu.p2 != 0:
        raise CardStatus(SW_WRONG_P1P2)
    if not 2 <= len(apdu.data) <= 6:
        raise CardStatus(SW_WRONG_LENGTH)
    _check_pin(state, apdu.data, commit)
    return True


def change_pin(state: CardState, apdu: Apdu, commit: Commit) -> None:
    """CHANGE PIN `80 5E 01 00 Lc old || FF || new`, with the same try counting as VERIFY."""
    old, sep, new = apdu.data.partition(b"\xff")
    if not sep or not 2 <= len(old) <= 6 or not 2 <= len(new) <= 6:
        raise CardStatus(SW_WRONG_DATA)
    _check_pin(state, old, commit)

    def write() -> None:
        state.pin = new

    commit(write)


def reload_pin(state: CardState, apdu: Apdu, commit: Commit) -> None:
    """RELOAD PIN `80 5E 00 00 Lc new || MAC(DRPK_L ⊕ DRPK_R, new)`: a new PIN, tries reset."""
    if len(apdu.data) < 6:
        raise CardStatus(SW_WRONG_LENGTH)
    new, given = apdu.data[:-4], apdu.data[-4:]
    drpk = state.any_key(KEY_PIN_RELOAD, 0)
    if drpk is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    expected = mac.pboc_mac(Des(pboc.tac_key(drpk.value)), new)
    if not hmac.compare_digest(expected, given):
        raise CardStatus(SW_MAC_INVALID)
    _set_pin(state, new, commit)


def unblock_pin(state: CardState, apdu: Apdu, challenge: bytes | None, commit: Commit) -> None:
    """PIN UNBLOCK `84 24 P1 00 Lc enc(len || PIN) MAC` under the DPUK (secure messaging)."""
    dpuk = state.any_key(KEY_PIN_UNBLOCK, apdu.p1)
    if dpuk is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    cipher = check_line_mac(dpuk.value, challenge, apdu)
    pin = decrypt_sm(dpuk.value, cipher)
    if not 2 <= len(pin) <= 6:
        raise CardStatus(SW_WRONG_DATA)
    _set_pin(state, pin, commit)


def write_key(state: CardState, apdu: Apdu, challenge: bytes | None, commit: Commit) -> None:
    control = state.key(KEY_CONTROL, 0)
    if control is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    cipher = check_line_mac(control.value, challenge, apdu)
    plain = decrypt_sm(control.value, cipher)
    if len(plain) != ATTRIBUTE_BYTES + KEY_BYTES:
        raise CardStatus(SW_WRONG_DATA)
    key_type, version, alg = plain[0], plain[3], plain[4]
    if key_type not in KEY_TYPES or apdu.p1 not in (0x01, key_type):
        raise CardStatus(SW_WRONG_DATA)
    key = CardKey(key_type, apdu.p2, version, alg, plain[ATTRIBUTE_BYTES:])

    def write() -> None:
        state.keys[(key.key_type, key.index)] = key

    commit(write)


def application_block(
    state: CardState, apdu: Apdu, challenge: bytes | None, commit: Commit
) -> None:
    """APPLICATION BLOCK `84 1E 00 P2 04 MAC`: P2 00 temporary, 01 permanent."""
    if apdu.p1 != 0 or apdu.p2 not in (0, 1):
        raise CardStatus(SW_WRONG_P1P2)
    check_line_mac(maintenance_key(state), challenge, apdu)
    block = BLOCK_PERMANENT if apdu.p2 == 1 else BLOCK_TEMPORARY

    def write() -> None:
        if state.app_block != BLOCK_PERMANENT:
            state.app_block = block

    commit(write)


def application_unblock(
    state: CardState, apdu: Apdu, challenge: bytes | None, commit: Commit
) -> None:
    """APPLICATION UNBLOCK `84 18 00 00 04 MAC`; a permanent block stays (9303)."""
    check_line_mac(maintenance_key(state), challenge, apdu)
    if state.app_block == BLOCK_PERMANENT:
        raise CardStatus(SW_APP_LOCKED_PERMANENT)
    if state.app_block == BLOCK_NONE:
        raise CardStatus(SW_CONDITIONS)

    def write() -> None:
        state.app_block = BLOCK_NONE

    commit(write)


def card_block(state: CardState, apdu: Apdu, challenge: bytes | None, commit: Commit) -> None:
    """CARD BLOCK `84 16 00 00 04 MAC`: the whole card, for good."""
    check_line_mac(maintenance_key(state), challenge, apdu)

    def write() -> None:
        state.card_blocked = True

    commit(write)


def _check_pin(state: CardState, given: bytes, commit: Commit) -> None:
    if state.pin is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    if state.pin_tries_left == 0:
        raise CardStatus(SW_AUTH_BLOCKED)
    if hmac.compare_digest(given, state.pin):
        if state.pin_tries_left != state.pin_tries_max:

            def reset() -> None:
                state.pin_tries_left = state.pin_tries_max

            commit(reset)
        return

    def count() -> None:
        state.pin_tries_left -= 1

    commit(count)
    if state.pin_tries_left == 0:
        raise CardStatus(SW_AUTH_BLOCKED)
    raise CardStatus(SW_PIN_TRIES_BASE | state.pin_tries_left)


def _set_pin(state: CardState, pin: bytes, commit: Commit) -> None:
    def write() -> None:
        state.pin = pin
        state.pin_tries_left = state.pin_tries_max

    commit(write)


def decrypt_sm(key: bytes, cipher: bytes) -> bytes:
    if not cipher or len(cipher) % 8:
        raise CardStatus(SW_WRONG_LENGTH)
    try:
        return pboc.secure_decrypt(Des(key), cipher)
    except InvalidInputError:
        raise CardStatus(SW_WRONG_DATA) from None

"""The virtual card's medical record book (specs/card-layout.md): the health data file EF 0019
and the cyclic visit file EF 001A, with their access conditions.

- READ BINARY of EF 0019: bytes 0-47 (the emergency block) for anyone; a read reaching past
  byte 47 only after VERIFY (else 6982).
- READ RECORD of EF 001A (record 1 the newest): only after VERIFY (6982).
- Writes only line-protected under the record key DRK (key type 36, index 02, diversified
  from the centre's MK_RECORD), the MAC over the command with IV = the card's last GET
  CHALLENGE || 00000000: `04 D6 99 00` UPDATE BINARY of the whole EF 0019, `04 E2 00 D0`
  APPEND RECORD to EF 001A. No challenge pending (never asked, or used by an earlier command:
  a replay) → 6984; a wrong MAC (forged, or made for another challenge) → 6988; a plain
  `00 D6` / `00 E2` → 6982; UPDATE RECORD of a visit → 6A81 (the book is append-only).
"""

from __future__ import annotations

from collections.abc import Callable

from messages.card_records import (
    EF_HEALTH,
    EF_VISITS,
    HEALTH_BYTES,
    HEALTH_OPEN_BYTES,
    KEY_INDEX_RECORD,
    VISIT_RECORD_BYTES,
    VISIT_RECORDS_MAX,
)
from simulators.card.apdu import (
    SW_FUNCTION_UNSUPPORTED,
    SW_OFFSET_OUT_OF_RANGE,
    SW_RECORD_NOT_FOUND,
    SW_REFERENCE_NOT_FOUND,
    SW_SECURITY_STATUS,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Apdu,
    CardStatus,
)
from simulators.card.security import check_line_mac
from simulators.card.state import KEY_APP_MAINT, CardState

Commit = Callable[[Callable[[], None]], None]
RECORD_FIDS = frozenset({EF_HEALTH, EF_VISITS})


def health(state: CardState) -> bytes:
    return state.binary.get(EF_HEALTH, bytes(HEALTH_BYTES))


def targets_records(apdu: Apdu, current_ef: int | None) -> bool:
    """Whether a READ/UPDATE BINARY, READ/APPEND/UPDATE RECORD names a file of the book."""
    if apdu.ins in (0xB0, 0xD6):
        fid = apdu.p1 & 0x1F if apdu.p1 & 0x80 else current_ef
    elif apdu.ins in (0xB2, 0xE2, 0xDC):
        fid = (apdu.p2 >> 3) or current_ef
    else:
        return False
    return fid in RECORD_FIDS


def record_key(state: CardState) -> bytes:
    drk = state.key(KEY_APP_MAINT, KEY_INDEX_RECORD)
    if drk is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    return drk.value


def read_binary(state: CardState, apdu: Apdu, pin_verified: bool) -> bytes:
    offset = apdu.p2 if apdu.p1 & 0x80 else (apdu.p1 << 8) | apdu.p2
    if offset >= HEALTH_BYTES:
        raise CardStatus(SW_OFFSET_OUT_OF_RANGE)
    data = health(state)
    length = apdu.le if apdu.le is not None and apdu.le != 256 else HEALTH_BYTES - offset
    if offset + length > HEALTH_OPEN_BYTES and not pin_verified:
        raise CardStatus(SW_SECURITY_STATUS)
    return data[offset : offset + length]


def read_record(state: CardState, apdu: Apdu, pin_verified: bool) -> bytes:
    if apdu.p2 & 0x07 != 0x04 or (apdu.p2 >> 3) not in (0, EF_VISITS):
        raise CardStatus(SW_WRONG_P1P2)
    if not pin_verified:
        raise CardStatus(SW_SECURITY_STATUS)
    if not 1 <= apdu.p1 <= len(state.visits):
        raise CardStatus(SW_RECORD_NOT_FOUND)
    return state.visits[apdu.p1 - 1]


def write(state: CardState, apdu: Apdu, challenge: bytes | None, commit: Commit) -> None:
    """UPDATE BINARY of EF 0019 or APPEND RECORD to EF 001A under the record key."""
    if apdu.ins == 0xDC:
        raise CardStatus(SW_FUNCTION_UNSUPPORTED)
    if apdu.cla & 0x0F != 0x04:
        raise CardStatus(SW_SECURITY_STATUS)
    if apdu.ins == 0xD6:
        if apdu.p1 != 0x80 | EF_HEALTH or apdu.p2 != 0:
            raise CardStatus(SW_WRONG_P1P2)
        content = check_line_mac(record_key(state), challenge, apdu)
        if len(content) != HEALTH_BYTES:
            raise CardStatus(SW_WRONG_LENGTH)

        def update() -> None:
            state.binary[EF_HEALTH] = content

        commit(update)
        return
    if apdu.p1 != 0 or apdu.p2 != EF_VISITS << 3:
        raise CardStatus(SW_WRONG_P1P2)
    record = check_line_mac(record_key(state), challenge, apdu)
    if len(record) != VISIT_RECORD_BYTES:
        raise CardStatus(SW_WRONG_LENGTH)
    if record[0] != 0x01:
        raise CardStatus(SW_WRONG_DATA)

    def append() -> None:
        state.visits[:] = [record, *state.visits][:VISIT_RECORDS_MAX]

    commit(append)

"""The virtual card's medical record book (specs/card-layout.md): the health data file EF 0019,
the cyclic visit file EF 001A and the centre's signatures EF 001B, with their access conditions.

- READ BINARY of EF 0019: bytes 0-47 (the emergency block) for anyone; a read reaching past
  byte 47 only after VERIFY (else 6982).
- READ RECORD of EF 001A (record 1 the newest): only after VERIFY (6982).
- Writes only line-protected under the record key DRK (key type 36, index 02, diversified
  from the centre's MK_RECORD), the MAC over the command with IV = the card's last GET
  CHALLENGE || 00000000: `04 D6 99 00` UPDATE BINARY of the whole EF 0019, `04 E2 00 D0`
  APPEND RECORD to EF 001A. No challenge pending (never asked, or used by an earlier command:
  a replay) → 6984; a wrong MAC (forged, or made for another challenge) → 6988; a plain
  `00 D6` / `00 E2` → 6982; UPDATE RECORD of a visit → 6A81 (the book is append-only).
- EF 001B, linear fixed, 4 × 128 bytes: READ RECORD 1-2 (the holder signature) for anyone,
  3-4 (the health signature) only after VERIFY; UPDATE RECORD `04 DC n DC` line-protected
  under the DRK as the other writes.
- A chained script (specs/card-layout.md "Multi-command scripts"): the card (card.py) hands
  `write` the sequence number it expects; command i is MACed with IV challenge ‖ i.
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
from messages.card_signatures import (
    EF_SIGNATURES,
    HOLDER_RECORDS,
    SIGNATURE_RECORD_BYTES,
    SIGNATURE_RECORDS,
)
from simulators.card.apdu import (
    SW_FUNCTION_UNSUPPORTED,
    SW_INCOMPATIBLE_FILE,
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
RECORD_FIDS = frozenset({EF_HEALTH, EF_VISITS, EF_SIGNATURES})
WRITES = frozenset({0xD6, 0xE2, 0xDC})  # UPDATE BINARY, APPEND RECORD, UPDATE RECORD


def health(state: CardState) -> bytes:
    return state.binary.get(EF_HEALTH, bytes(HEALTH_BYTES))


def target(apdu: Apdu, current_ef: int | None) -> int | None:
    """The file a READ/UPDATE BINARY, READ/APPEND/UPDATE RECORD names (by SFI, else the
    current file); None for any other command."""
    if apdu.ins in (0xB0, 0xD6):
        return apdu.p1 & 0x1F if apdu.p1 & 0x80 else current_ef
    if apdu.ins in (0xB2, 0xE2, 0xDC):
        return (apdu.p2 >> 3) or current_ef
    return None


def targets_records(apdu: Apdu, current_ef: int | None) -> bool:
    """Whether the command names a file of the book."""
    return target(apdu, current_ef) in RECORD_FIDS


def script_write(apdu: Apdu, current_ef: int | None) -> bool:
    """A line-protected write of the book: what a chained script may be made of."""
    return apdu.cla & 0x0F == 0x04 and apdu.ins in WRITES and targets_records(apdu, current_ef)


def record_key(state: CardState) -> bytes:
    drk = state.key(KEY_APP_MAINT, KEY_INDEX_RECORD)
    if drk is None:
        raise CardStatus(SW_REFERENCE_NOT_FOUND)
    return drk.value


def read_binary(state: CardState, apdu: Apdu, fid: int | None, pin_verified: bool) -> bytes:
    if fid != EF_HEALTH:
        raise CardStatus(SW_INCOMPATIBLE_FILE)
    offset = apdu.p2 if apdu.p1 & 0x80 else (apdu.p1 << 8) | apdu.p2
    if offset >= HEALTH_BYTES:
        raise CardStatus(SW_OFFSET_OUT_OF_RANGE)
    data = health(state)
    length = apdu.le if apdu.le is not None and apdu.le != 256 else HEALTH_BYTES - offset
    if offset + length > HEALTH_OPEN_BYTES and not pin_verified:
        raise CardStatus(SW_SECURITY_STATUS)
    return data[offset : offset + length]


def read_record(state: CardState, apdu: Apdu, fid: int | None, pin_verified: bool) -> bytes:
    if apdu.p2 & 0x07 != 0x04:
        raise CardStatus(SW_WRONG_P1P2)
    if fid == EF_SIGNATURES:
        if not 1 <= apdu.p1 <= SIGNATURE_RECORDS:
            raise CardStatus(SW_RECORD_NOT_FOUND)
        if apdu.p1 not in HOLDER_RECORDS and not pin_verified:
            raise CardStatus(SW_SECURITY_STATUS)
        return state.signatures[apdu.p1 - 1]
    if fid != EF_VISITS:
        raise CardStatus(SW_INCOMPATIBLE_FILE)
    if not pin_verified:
        raise CardStatus(SW_SECURITY_STATUS)
    if not 1 <= apdu.p1 <= len(state.visits):
        raise CardStatus(SW_RECORD_NOT_FOUND)
    return state.visits[apdu.p1 - 1]


def write(
    state: CardState,
    apdu: Apdu,
    fid: int | None,
    challenge: bytes | None,
    sequence: int,
    commit: Commit,
) -> None:
    """UPDATE BINARY of EF 0019, APPEND RECORD to EF 001A or UPDATE RECORD of EF 001B under
    the record key, as command `sequence` of the script for `challenge`."""
    if apdu.ins == 0xDC and fid != EF_SIGNATURES:
        raise CardStatus(SW_FUNCTION_UNSUPPORTED)
    if apdu.cla & 0x0F != 0x04:
        raise CardStatus(SW_SECURITY_STATUS)
    if apdu.ins == 0xDC:
        _write_signature(state, apdu, challenge, sequence, commit)
        return
    if apdu.ins == 0xD6:
        if apdu.p1 != 0x80 | EF_HEALTH or apdu.p2 != 0:
            raise CardStatus(SW_WRONG_P1P2)
        content = check_line_mac(record_key(state), challenge, apdu, sequence)
        if len(content) != HEALTH_BYTES:
            raise CardStatus(SW_WRONG_LENGTH)

        def update() -> None:
            state.binary[EF_HEALTH] = content

        commit(update)
        return
    if apdu.p1 != 0 or apdu.p2 != EF_VISITS << 3:
        raise CardStatus(SW_WRONG_P1P2)
    record = check_line_mac(record_key(state), challenge, apdu, sequence)
    if len(record) != VISIT_RECORD_BYTES:
        raise CardStatus(SW_WRONG_LENGTH)
    if record[0] != 0x01:
        raise CardStatus(SW_WRONG_DATA)

    def append() -> None:
        state.visits[:] = [record, *state.visits][:VISIT_RECORDS_MAX]

    commit(append)


def _write_signature(
    state: CardState, apdu: Apdu, challenge: bytes | None, sequence: int, commit: Commit
) -> None:
    if not 1 <= apdu.p1 <= SIGNATURE_RECORDS or apdu.p2 != EF_SIGNATURES << 3 | 0x04:
        raise CardStatus(SW_WRONG_P1P2)
    part = check_line_mac(record_key(state), challenge, apdu, sequence)
    if len(part) != SIGNATURE_RECORD_BYTES:
        raise CardStatus(SW_WRONG_LENGTH)
    number = apdu.p1

    def update() -> None:
        state.signatures[number - 1] = part

    commit(update)

"""The ED/EP purse commands of the virtual card (reference §1.4): INITIALIZE FOR LOAD /
PURCHASE / CASH WITHDRAW / CAPP / UNLOAD, CREDIT FOR LOAD, DEBIT FOR PURCHASE / UNLOAD, GET
BALANCE and GET TRANSACTION PROVE. The MAC inputs come from `hsm.pboc`, the MACs from
`hsm.mac`: the card and the HSM share one implementation of the standard.

Each command checks everything first and then hands its state change to `commit`, which is
where power can be lost (tearing) before or after the balance is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hsm import mac, pboc
from hsm.des import Des
from simulators.card.apdu import (
    SW_CONDITIONS,
    SW_COUNTER_MAX,
    SW_FUNCTION_UNSUPPORTED,
    SW_INSUFFICIENT_BALANCE,
    SW_KEY_INDEX_UNSUPPORTED,
    SW_MAC_INVALID,
    SW_MAC_UNAVAILABLE,
    SW_NOT_ACCEPTED,
    SW_SECURITY_STATUS,
    SW_WRONG_DATA,
    SW_WRONG_P1P2,
    Apdu,
    CardStatus,
    require_length,
)
from simulators.card.state import (
    DETAIL_RECORDS_MAX,
    KEY_LOAD,
    KEY_PURCHASE,
    KEY_TAC,
    KEY_UNLOAD,
    PURSE_ED,
    PURSE_EP,
    CardKey,
    CardState,
    Proof,
    Purse,
)

ALG_3DES = 0x00
BALANCE_MAX = 0xFFFFFFFF
COUNTER_MAX = 0xFFFF

# INITIALIZE P1 → (transaction type by purse, card key type, online?)
P1_LOAD, P1_PURCHASE, P1_WITHDRAW, P1_CAPP, P1_OVERDRAW, P1_UNLOAD = 0, 1, 2, 3, 4, 5
INITIALIZE: dict[int, tuple[dict[int, int], int, bool]] = {
    P1_LOAD: ({PURSE_ED: pboc.TYPE_ED_LOAD, PURSE_EP: pboc.TYPE_EP_LOAD}, KEY_LOAD, True),
    P1_PURCHASE: (
        {PURSE_ED: pboc.TYPE_ED_PURCHASE, PURSE_EP: pboc.TYPE_EP_PURCHASE},
        KEY_PURCHASE,
        False,
    ),
    P1_WITHDRAW: ({PURSE_ED: pboc.TYPE_ED_WITHDRAW}, KEY_PURCHASE, False),
    P1_CAPP: ({PURSE_EP: pboc.TYPE_CAPP_PURCHASE}, KEY_PURCHASE, False),
    P1_UNLOAD: ({PURSE_ED: pboc.TYPE_ED_UNLOAD}, KEY_UNLOAD, True),
}

Commit = Callable[[Callable[[], None]], None]


@dataclass
class Pending:
    """An INITIALIZE waiting for its CREDIT/DEBIT; lost with the power."""

    p1: int
    purse: int
    txn_type: int
    amount: int
    terminal_id: bytes
    rnd: bytes
    ctr: int
    key: CardKey
    old_balance: int
    session: Des | None  # online session key; a purchase's needs the terminal serial first


def get_balance(state: CardState, apdu: Apdu, pin_verified: bool) -> bytes:
    if apdu.p1 != 0 or apdu.p2 not in (PURSE_ED, PURSE_EP):
        raise CardStatus(SW_WRONG_P1P2)
    if apdu.p2 == PURSE_ED and not pin_verified:
        raise CardStatus(SW_SECURITY_STATUS)
    return state.purses[apdu.p2].balance.to_bytes(4, "big")


def initialize(
    state: CardState, apdu: Apdu, pin_verified: bool, rnd: bytes
) -> tuple[bytes, Pending]:
    if apdu.p1 == P1_OVERDRAW:
        raise CardStatus(SW_FUNCTION_UNSUPPORTED)  # overdraw limits are fixed at zero
    spec = INITIALIZE.get(apdu.p1)
    if spec is None:
        raise CardStatus(SW_WRONG_P1P2)
    types, key_type, online = spec
    txn_type = types.get(apdu.p2)
    if txn_type is None:
        raise CardStatus(SW_WRONG_P1P2)
    data = require_length(apdu, 11)
    key = state.key(key_type, data[0])
    if key is None:
        raise CardStatus(SW_KEY_INDEX_UNSUPPORTED)
    if apdu.p2 == PURSE_ED and not pin_verified:
        raise CardStatus(SW_SECURITY_STATUS)
    amount = int.from_bytes(data[1:5], "big")
    terminal_id = data[5:11]
    purse = state.purses[apdu.p2]
    ctr = purse.online_ctr if online else purse.offline_ctr
    if ctr >= COUNTER_MAX:
        raise CardStatus(SW_COUNTER_MAX)
    credit = apdu.p1 == P1_LOAD
    if credit and purse.balance + amount > BALANCE_MAX:
        raise CardStatus(SW_CONDITIONS)
    if not credit and purse.balance < amount:
        raise CardStatus(SW_INSUFFICIENT_BALANCE)
    pending = Pending(
        apdu.p1, apdu.p2, txn_type, amount, terminal_id, rnd, ctr, key, purse.balance, None
    )
    head = purse.balance.to_bytes(4, "big") + ctr.to_bytes(2, "big")
    tail = bytes([key.version, key.alg]) + rnd
    if not online:
        return head + purse.overdraft.to_bytes(3, "big") + tail, pending
    session = Des(pboc.online_session_key(Des(key.value), rnd, ctr))
    pending.session = session
    mac1 = mac.pboc_mac(
        session, pboc.load_mac1_data(purse.balance, amount, txn_type, terminal_id)
    )
    return head + tail + mac1, pending


def credit_for_load(
    state: CardState, apdu: Apdu, pending: Pending | None, commit: Commit
) -> bytes:
    if pending is None or pending.p1 != P1_LOAD or pending.session is None:
        raise CardStatus(SW_NOT_ACCEPTED)
    if apdu.p1 != 0 or apdu.p2 != 0:
        raise CardStatus(SW_WRONG_P1P2)
    data = require_length(apdu, 11)
    when = bcd_time(data[:7])
    expected = mac.pboc_mac(
        pending.session,
        pboc.load_mac2_data(pending.amount, pending.txn_type, pending.terminal_id, when),
    )
    if expected != data[7:11]:
        raise CardStatus(SW_MAC_INVALID)
    purse = state.purses[pending.purse]
    new_balance = purse.balance + pending.amount
    tac = _online_tac(state, pending, new_balance, when)
    _apply(state, purse, pending, new_balance, when, data[7:11], tac, commit)
    return tac


def debit_for_unload(
    state: CardState, apdu: Apdu, pending: Pending | None, commit: Commit
) -> bytes:
    if pending is None or pending.p1 != P1_UNLOAD or pending.session is None:
        raise CardStatus(SW_NOT_ACCEPTED)
    data = require_length(apdu, 11)
    when = bcd_time(data[:7])
    expected = mac.pboc_mac(
        pending.session,
        pboc.load_mac2_data(pending.amount, pending.txn_type, pending.terminal_id, when),
    )
    if expected != data[7:11]:
        raise CardStatus(SW_MAC_INVALID)
    purse = state.purses[pending.purse]
    if purse.balance < pending.amount:
        raise CardStatus(SW_INSUFFICIENT_BALANCE)
    new_balance = purse.balance - pending.amount
    mac3 = mac.pboc_mac(pending.session, _online_result(pending, new_balance, when))
    tac = _online_tac(state, pending, new_balance, when)
    _apply(state, purse, pending, new_balance, when, mac3, tac, commit)
    return mac3


def debit_for_purchase(
    state: CardState, apdu: Apdu, pending: Pending | None, commit: Commit
) -> bytes:
    if pending is None or pending.session is not None or pending.p1 == P1_UNLOAD:
        raise CardStatus(SW_NOT_ACCEPTED)
    data = require_length(apdu, 15)
    term_serial = int.from_bytes(data[:4], "big")
    when = bcd_time(data[4:11])
    session = Des(
        pboc.offline_session_key(Des(pending.key.value), pending.rnd, pending.ctr, term_serial)
    )
    mac1 = mac.pboc_mac(
        session,
        pboc.purchase_mac1_data(pending.amount, pending.txn_type, pending.terminal_id, when),
    )
    if mac1 != data[11:15]:
        raise CardStatus(SW_MAC_INVALID)
    purse = state.purses[pending.purse]
    if purse.balance < pending.amount:
        raise CardStatus(SW_INSUFFICIENT_BALANCE)
    mac2 = mac.pboc_mac(session, pboc.amount_data(pending.amount))
    tac_data = pboc.purchase_tac_data(
        pending.amount, pending.txn_type, pending.terminal_id, term_serial, when
    )
    tac = mac.pboc_mac(_tac_key(state, pending), tac_data)
    _apply(state, purse, pending, purse.balance - pending.amount, when, mac2, tac, commit)
    return tac + mac2


def get_transaction_prove(state: CardState, apdu: Apdu) -> bytes:
    """MAC || TAC of the last transaction of type P2 if its INITIALIZE counter matches."""
    data = require_length(apdu, 2)
    proof = state.proofs.get(apdu.p2)
    if proof is None or proof.ctr != int.from_bytes(data, "big"):
        raise CardStatus(SW_MAC_UNAVAILABLE)
    return proof.mac + proof.tac


def detail_record(pending: Pending, overdraft: int, when: datetime) -> bytes:
    """ctr(2, before +1) | overdraft(3) | amount(4) | type(1) | terminal(6) | date(4) | time(3)."""
    return (
        pending.ctr.to_bytes(2, "big")
        + overdraft.to_bytes(3, "big")
        + pending.amount.to_bytes(4, "big")
        + bytes([pending.txn_type])
        + pending.terminal_id
        + pboc.bcd_datetime(when)
    )


def bcd_time(raw: bytes) -> datetime:
    """yyyymmdd hhmmss BCD (7 bytes) → datetime; 6A80 when it is no date."""
    try:
        return datetime.strptime(raw.hex(), "%Y%m%d%H%M%S")
    except ValueError:
        raise CardStatus(SW_WRONG_DATA) from None


def _online_result(pending: Pending, new_balance: int, when: datetime) -> bytes:
    return pboc.online_result_data(
        new_balance, pending.ctr, pending.amount, pending.txn_type, pending.terminal_id, when
    )


def _tac_key(state: CardState, pending: Pending) -> Des:
    dtk = state.any_key(KEY_TAC, pending.key.index)
    if dtk is None:
        raise CardStatus(SW_KEY_INDEX_UNSUPPORTED)
    return Des(pboc.tac_key(dtk.value))


def _online_tac(state: CardState, pending: Pending, new_balance: int, when: datetime) -> bytes:
    return mac.pboc_mac(_tac_key(state, pending), _online_result(pending, new_balance, when))


def _apply(
    state: CardState,
    purse: Purse,
    pending: Pending,
    new_balance: int,
    when: datetime,
    proof_mac: bytes,
    tac: bytes,
    commit: Commit,
) -> None:
    record = detail_record(pending, purse.overdraft, when)

    def write() -> None:
        purse.balance = new_balance
        if pending.session is not None:
            purse.online_ctr = pending.ctr + 1
        else:
            purse.offline_ctr = pending.ctr + 1
        state.details.insert(0, record)
        del state.details[DETAIL_RECORDS_MAX:]
        state.proofs[pending.txn_type] = Proof(pending.ctr, proof_mac, tac)

    commit(write)

"""The terminal side of the card commands, over any card connection: what a POS, a kiosk or a
bank counter sends to a card and its PSAM, parsed into the values the switch's messages carry.
No keys here: MAC2 for a load comes from the host, MAC1 for a purchase from the PSAM.

    init = initialize_load(card, PURSE_EP, 100_00, terminal_id)
    txn = init.online_txn()                      # → the host: hsm.verify_mac1 / generate_mac2
    tac = credit_for_load(card, host_time, mac2)
    debit = offline_purchase(card, psam, PURSE_EP, 25_50, when, factor)   # PSAM MAC1 + MAC2
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hsm import pboc
from hsm.interface import OnlineTxn, PurchaseRecord
from switch.card_io.connection import ApduError, CardConnection, expect

PURSE_ED, PURSE_EP = 0x01, 0x02
KEY_INDEX = 0x01
SELECT_APP = bytes.fromhex("00A4040006D15600000503")
LOAD_TYPES = {PURSE_ED: pboc.TYPE_ED_LOAD, PURSE_EP: pboc.TYPE_EP_LOAD}
PURCHASE_TYPES = {PURSE_ED: pboc.TYPE_ED_PURCHASE, PURSE_EP: pboc.TYPE_EP_PURCHASE}


@dataclass(frozen=True, slots=True)
class OnlineInit:
    """The card's INITIALIZE FOR LOAD / UNLOAD response, with what was asked."""

    txn_type: int
    amount_fen: int
    terminal_id: bytes
    old_balance_fen: int
    online_ctr: int
    key_version: int
    alg: int
    rnd: bytes
    mac1: bytes

    def online_txn(self) -> OnlineTxn:
        return OnlineTxn(self.txn_type, self.old_balance_fen, self.amount_fen, self.online_ctr,
                         self.rnd, self.terminal_id, self.mac1)


@dataclass(frozen=True, slots=True)
class Debit:
    """An offline purchase as the POS keeps it for upload: the TAC covers the record."""

    record: PurchaseRecord
    offline_ctr: int
    rnd: bytes
    old_balance_fen: int
    tac: bytes
    mac2: bytes


def select(card: CardConnection) -> None:
    expect(card, SELECT_APP, "SELECT")


def verify_pin(card: CardConnection, pin_bcd: bytes) -> int:
    """VERIFY; returns the status word (9000, 63Cx, 6983) for the caller to show."""
    return card.transmit(bytes([0x00, 0x20, 0x00, 0x00, len(pin_bcd)]) + pin_bcd)[1]


def get_balance(card: CardConnection, purse: int) -> int:
    return int.from_bytes(expect(card, bytes([0x80, 0x5C, 0x00, purse, 0x04]), "BALANCE"), "big")


def initialize_load(
    card: CardConnection, purse: int, amount_fen: int, terminal_id: bytes, *,
    unload: bool = False, key_index: int = KEY_INDEX,
) -> OnlineInit:
    p1, txn_type = (0x05, pboc.TYPE_ED_UNLOAD) if unload else (0x00, LOAD_TYPES[purse])
    data = bytes([key_index]) + amount_fen.to_bytes(4, "big") + terminal_id
    out = expect(card, bytes([0x80, 0x50, p1, purse, 0x0B]) + data + b"\x10", "INITIALIZE")
    return OnlineInit(txn_type, amount_fen, terminal_id, int.from_bytes(out[:4], "big"),
                      int.from_bytes(out[4:6], "big"), out[6], out[7], out[8:12], out[12:16])


def credit_for_load(card: CardConnection, host_time: datetime, mac2: bytes) -> bytes:
    """CREDIT FOR LOAD → the TAC."""
    data = pboc.bcd_datetime(host_time) + mac2
    return expect(card, b"\x80\x52\x00\x00\x0b" + data + b"\x04", "CREDIT FOR LOAD")


def debit_for_unload(card: CardConnection, host_time: datetime, mac2: bytes) -> bytes:
    """DEBIT FOR UNLOAD → MAC3."""
    data = pboc.bcd_datetime(host_time) + mac2
    return expect(card, b"\x80\x54\x03\x00\x0b" + data + b"\x04", "DEBIT FOR UNLOAD")


def get_transaction_prove(card: CardConnection, txn_type: int, ctr: int) -> bytes | None:
    """MAC || TAC of the transaction with that INITIALIZE counter, or None (9406: it did
    not happen)."""
    apdu = bytes([0x80, 0x5A, 0x00, txn_type, 0x02]) + ctr.to_bytes(2, "big") + b"\x08"
    data, sw = card.transmit(apdu)
    if sw == 0x9406:
        return None
    if sw != 0x9000:
        raise ApduError("GET TRANSACTION PROVE", sw)
    return data


def offline_purchase(
    card: CardConnection,
    psam: CardConnection,
    purse: int,
    amount_fen: int,
    when: datetime,
    factor: bytes,
    *,
    key_index: int = KEY_INDEX,
) -> Debit:
    """INITIALIZE FOR PURCHASE, PSAM MAC1 (`80 70`, diversified by `factor`), DEBIT FOR
    PURCHASE, PSAM MAC2 check (`80 72`). Raises ApduError where a step is refused."""
    terminal_id = expect(psam, bytes.fromhex("00B0960006"), "PSAM terminal number")
    head = bytes([0x80, 0x50, 0x01, purse, 0x0B, key_index]) + amount_fen.to_bytes(4, "big")
    init = expect(card, head + terminal_id + b"\x0f", "INITIALIZE FOR PURCHASE")
    ctr, kv, alg, rnd = init[4:6], init[9], init[10], init[11:15]
    txn_type = PURCHASE_TYPES[purse]
    data = (rnd + ctr + amount_fen.to_bytes(4, "big") + bytes([txn_type])
            + pboc.bcd_datetime(when) + bytes([kv, alg]) + factor)
    out = expect(psam, bytes([0x80, 0x70, 0x00, 0x00, len(data)]) + data + b"\x08", "MAC1")
    term_serial, mac1 = out[:4], out[4:8]
    debit = b"\x80\x54\x01\x00\x0f" + term_serial + pboc.bcd_datetime(when) + mac1 + b"\x08"
    tac_mac2 = expect(card, debit, "DEBIT FOR PURCHASE")
    expect(psam, b"\x80\x72\x00\x00\x04" + tac_mac2[4:], "PSAM MAC2")
    record = PurchaseRecord(txn_type, amount_fen, terminal_id,
                            int.from_bytes(term_serial, "big"), when)
    return Debit(record, int.from_bytes(ctr, "big"), rnd, int.from_bytes(init[:4], "big"),
                 tac_mac2[:4], tac_mac2[4:])

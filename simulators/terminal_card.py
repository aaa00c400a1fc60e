"""What a kiosk or POS does with the card (and the PSAM) at the APDU level, over any card
connection: the card side of an ED load and of an offline-capable purchase. The messages to the
centre are built by the caller from the :class:`~messages.private.CardData` returned here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hsm import pboc
from messages.private import CardData, Purse
from switch.card_connection import CardConnection, expect

SELECT_APP = bytes.fromhex("00A4040006D15600000503")
GET_CHALLENGE = bytes.fromhex("0084000004")
KEY_INDEX = 0x01  # the load and purchase keys' index, as personalisation writes them


def open_application(conn: CardConnection, pin: str) -> None:
    """SELECT the medical application and VERIFY the cardholder's PIN (the card decides)."""
    expect(conn, SELECT_APP, "SELECT")
    expect(conn, bytes([0x00, 0x20, 0x00, 0x00, len(pin) // 2]) + bytes.fromhex(pin), "VERIFY")


def balance(conn: CardConnection, purse: Purse = Purse.ED) -> int:
    return int.from_bytes(
        expect(conn, bytes([0x80, 0x5C, 0x00, purse, 0x04]), "GET BALANCE"), "big"
    )


@dataclass(frozen=True, slots=True)
class LoadStart:
    """INITIALIZE FOR LOAD done: what the 0200 carries in field 58."""

    card: CardData


def initialize_load(
    conn: CardConnection,
    serial: bytes,
    amount_fen: int,
    terminal_id: bytes,
    purse: Purse = Purse.ED,
) -> LoadStart:
    """GET CHALLENGE (for an issuer script the centre may send back), then INITIALIZE FOR LOAD."""
    challenge = expect(conn, GET_CHALLENGE, "GET CHALLENGE")
    head = bytes([0x80, 0x50, 0x00, purse, 0x0B, KEY_INDEX])
    init = expect(conn, head + amount_fen.to_bytes(4, "big") + terminal_id + b"\x10", "INIT LOAD")
    return LoadStart(
        CardData(
            app_serial=serial,
            purse=purse,
            old_balance_fen=int.from_bytes(init[:4], "big"),
            online_counter=int.from_bytes(init[4:6], "big"),
            key_version=init[6],
            algorithm_id=init[7],
            card_random=init[8:12],
            mac1=init[12:16],
            psam_terminal=terminal_id,
            amount_fen=amount_fen,
            pboc_type=int(purse),
            challenge=challenge,
        )
    )


def credit_for_load(conn: CardConnection, card_datetime: str, mac2: bytes) -> bytes:
    """CREDIT FOR LOAD with the centre's MAC2 and host date and time; the card's TAC."""
    command = bytes.fromhex("805200000B") + bytes.fromhex(card_datetime) + mac2 + b"\x04"
    return expect(conn, command, "CREDIT FOR LOAD")


def purchase(
    card: CardConnection,
    psam: CardConnection,
    serial: bytes,
    amount_fen: int,
    when: datetime,
    purse: Purse = Purse.ED,
) -> CardData:
    """An offline-capable purchase: card INITIALIZE, PSAM MAC1, card DEBIT (TAC and MAC2), the
    PSAM checks MAC2. Returns what an advice or a batch-upload record carries."""
    terminal_id = expect(psam, bytes.fromhex("00B0960006"), "READ PSAM 0016")
    head = bytes([0x80, 0x50, 0x01, purse, 0x0B, KEY_INDEX])
    init = expect(
        card, head + amount_fen.to_bytes(4, "big") + terminal_id + b"\x0f", "INIT PURCHASE"
    )
    ctr, kv, alg, rnd = init[4:6], init[9], init[10], init[11:15]
    txn_type = pboc.TYPE_ED_PURCHASE if purse is Purse.ED else pboc.TYPE_EP_PURCHASE
    data = (
        rnd
        + ctr
        + amount_fen.to_bytes(4, "big")
        + bytes([txn_type])
        + pboc.bcd_datetime(when)
        + bytes([kv, alg])
        + pboc.card_factor(serial)
    )
    out = expect(psam, bytes([0x80, 0x70, 0x00, 0x00, len(data)]) + data + b"\x08", "PSAM MAC1")
    term_serial, mac1 = out[:4], out[4:8]
    debit = b"\x80\x54\x01\x00\x0f" + term_serial + pboc.bcd_datetime(when) + mac1 + b"\x08"
    tac_mac2 = expect(card, debit, "DEBIT FOR PURCHASE")
    expect(psam, b"\x80\x72\x00\x00\x04" + tac_mac2[4:], "PSAM MAC2")
    return CardData(
        app_serial=serial,
        purse=purse,
        key_version=kv,
        algorithm_id=alg,
        offline_counter=int.from_bytes(ctr, "big"),
        amount_fen=amount_fen,
        pboc_type=txn_type,
        psam_terminal=terminal_id,
        psam_serial=int.from_bytes(term_serial, "big"),
        card_datetime=when.strftime("%Y%m%d%H%M%S"),
        tac=tac_mac2[:4],
    )

"""The card side of a kiosk's load and a POS's purchase, as the centre's messages carry it: the
APDU steps are :mod:`simulators.card.terminal`'s; this turns their results into the
:class:`~messages.private.CardData` of field 58.
"""

from __future__ import annotations

from datetime import datetime

from hsm import pboc
from messages.private import CardData, Purse
from simulators.card import terminal
from switch.card_io.connection import ApduError, CardConnection, expect

GET_CHALLENGE = bytes.fromhex("0084000004")


def open_application(conn: CardConnection, pin: str) -> None:
    """SELECT the medical application and VERIFY the cardholder's PIN (the card decides)."""
    terminal.select(conn)
    sw = terminal.verify_pin(conn, bytes.fromhex(pin))
    if sw != 0x9000:
        raise ApduError("VERIFY", sw)


def balance(conn: CardConnection, purse: Purse = Purse.ED) -> int:
    return terminal.get_balance(conn, int(purse))


def initialize_load(
    conn: CardConnection,
    serial: bytes,
    amount_fen: int,
    terminal_id: bytes,
    purse: Purse = Purse.ED,
) -> CardData:
    """GET CHALLENGE (for an issuer script the centre may send back), then INITIALIZE FOR LOAD:
    what the load's 0200 carries in field 58."""
    challenge = expect(conn, GET_CHALLENGE, "GET CHALLENGE")
    init = terminal.initialize_load(conn, int(purse), amount_fen, terminal_id)
    return CardData(
        app_serial=serial,
        purse=purse,
        old_balance_fen=init.old_balance_fen,
        online_counter=init.online_ctr,
        key_version=init.key_version,
        algorithm_id=init.alg,
        card_random=init.rnd,
        mac1=init.mac1,
        psam_terminal=terminal_id,
        amount_fen=amount_fen,
        pboc_type=init.txn_type,
        challenge=challenge,
    )


def credit_for_load(conn: CardConnection, card_datetime: str, mac2: bytes) -> bytes:
    """CREDIT FOR LOAD with the centre's MAC2 and host date and time; the card's TAC."""
    return terminal.credit_for_load(conn, datetime.strptime(card_datetime, "%Y%m%d%H%M%S"), mac2)


def purchase(
    card: CardConnection,
    psam: CardConnection,
    serial: bytes,
    amount_fen: int,
    when: datetime,
    purse: Purse = Purse.ED,
) -> CardData:
    """An offline-capable purchase through the PSAM; what an advice or upload record carries."""
    debit = terminal.offline_purchase(
        card, psam, int(purse), amount_fen, when, pboc.card_factor(serial)
    )
    record = debit.record
    return CardData(
        app_serial=serial,
        purse=purse,
        offline_counter=debit.offline_ctr,
        amount_fen=amount_fen,
        pboc_type=record.txn_type,
        psam_terminal=record.terminal_id,
        psam_serial=record.term_serial,
        card_datetime=when.strftime("%Y%m%d%H%M%S"),
        tac=debit.tac,
    )

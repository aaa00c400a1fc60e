"""The terminal-side helpers reproduce V4 over a direct connection and parse what the switch's
messages carry."""

from __future__ import annotations

from datetime import datetime

import pytest

from hsm import mac, pboc
from hsm.des import Des
from simulators.card import terminal
from switch.card_io.connection import ApduError, DirectConnection
from tests.support.cards import V4_KEY, h, v4_card
from tests.support.psam import v4_psam


def test_v4_through_the_terminal_helpers() -> None:
    virtual = v4_card(["C903814D", "584633C9", "11223344"])
    card = DirectConnection(virtual)
    psam = DirectConnection(v4_psam())
    card.connect()
    psam.connect()
    terminal.select(card)
    init = terminal.initialize_load(card, terminal.PURSE_EP, 0x2000, h("001122334455"))
    txn = init.online_txn()
    assert (txn.txn_type, txn.old_balance_fen, txn.online_ctr, txn.rnd, txn.mac1) == (
        2, 0, 0, h("C903814D"), h("03976C22"))
    assert terminal.get_transaction_prove(card, 2, 0) is None
    assert terminal.credit_for_load(card, datetime(2016, 12, 16, 10, 58), h("8AFA5718")) == h(
        "FA00066D")
    assert terminal.get_transaction_prove(card, 2, 0) == h("8AFA5718FA00066D")
    debit = terminal.offline_purchase(
        card, psam, terminal.PURSE_EP, 1, datetime(2016, 12, 16, 13, 46), b"", key_index=0
    )
    assert (debit.tac, debit.mac2, debit.record.term_serial) == (h("8AF270DC"), h("66B54A6B"), 0)
    assert terminal.get_balance(card, terminal.PURSE_EP) == 0x1FFF
    assert terminal.verify_pin(card, h("000000")) == 0x63C2
    assert terminal.verify_pin(card, h("123456")) == 0x9000
    virtual.state.purses[1].balance = 500
    init = terminal.initialize_load(card, terminal.PURSE_ED, 200, h("001122334455"), unload=True)
    session = Des(pboc.online_session_key(Des(V4_KEY), init.rnd, 0))
    when = datetime(2026, 1, 1, 0, 0, 0)
    mac2 = mac.pboc_mac(session, pboc.load_mac2_data(200, 3, h("001122334455"), when))
    mac3 = terminal.debit_for_unload(card, when, mac2)
    assert terminal.get_transaction_prove(card, 3, 0) is not None
    assert len(mac3) == 4 and terminal.get_balance(card, terminal.PURSE_ED) == 300
    assert terminal.get_transaction_prove(card, 3, 5) is None  # not that counter
    card.transmit(h("00A40000023F00"))
    with pytest.raises(ApduError):  # outside the application
        terminal.get_transaction_prove(card, 3, 0)

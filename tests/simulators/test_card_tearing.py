"""Tearing: power lost between INITIALIZE and CREDIT/DEBIT, before or after the card writes
its balance; the card's state file; GET TRANSACTION PROVE tells which happened."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from hsm import mac, pboc
from hsm.des import Des
from simulators.card import PowerLost, Tear, VirtualCard
from switch.card_io.connection import CardConnectionError, CardRemovedError, DirectConnection
from tests.support.cards import SELECT_APP, V4_KEY, call, h, ok, v4_card

INIT_LOAD = "805000020B0100002000001122334455" "10"
CREDIT = "805200000B" "20161216105800" "8AFA5718" "04"
INIT_PURCHASE = "805001020B" "00" "00000001" "001122334455" "0F"
DEBIT = "805401000F" "00000000" "20161216134600" "D45737C5" "08"


def test_power_off_between_initialize_and_credit(tmp_path: Path) -> None:
    card = v4_card(["C903814D", "C903814D"], path=tmp_path / "card.json")
    ok(card, SELECT_APP)
    ok(card, INIT_LOAD)
    card.power_off()  # the card is pulled: the session key is gone
    card.power_on()
    ok(card, SELECT_APP)
    assert call(card, CREDIT)[1] == 0x6901
    assert call(card, "805A000202000008")[1] == 0x9406  # it did not happen: restart
    assert ok(card, INIT_LOAD)[4:6] == h("0000")  # the same counter again


def test_tear_before_the_update(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = v4_card(["C903814D"], path=path)
    ok(card, SELECT_APP)
    ok(card, INIT_LOAD)
    card.tear_next(Tear.BEFORE_UPDATE)
    with pytest.raises(PowerLost):
        card.process(h(CREDIT))
    again = VirtualCard.load(path)  # what the card holds after the power cut
    again.power_on()
    ok(again, SELECT_APP)
    assert ok(again, "805C000204") == h("00000000")
    assert again.state.purses[2].online_ctr == 0
    assert call(again, "805A000202000008")[1] == 0x9406


def test_tear_after_the_update_is_proven(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    card = v4_card(["C903814D"], path=path)
    conn = DirectConnection(card)
    conn.connect()
    conn.transmit(h(SELECT_APP))
    conn.transmit(h(INIT_LOAD))
    card.tear_next(Tear.AFTER_UPDATE)
    with pytest.raises(CardRemovedError):
        conn.transmit(h(CREDIT))
    with pytest.raises(CardConnectionError):  # the connection saw the card go
        conn.transmit(h(SELECT_APP))
    again = VirtualCard.load(path)
    again.power_on()
    ok(again, SELECT_APP)
    assert ok(again, "805C000204") == h("00002000")
    assert again.state.purses[2].online_ctr == 1
    # GET TRANSACTION PROVE with the counter INITIALIZE returned: MAC2 || the V4 TAC.
    assert ok(again, "805A000202000008") == h("8AFA5718 FA00066D")


def test_tear_during_a_purchase() -> None:
    card = v4_card(["C903814D", "584633C9", "584633C9"])
    ok(card, SELECT_APP)
    ok(card, INIT_LOAD)
    ok(card, CREDIT)
    ok(card, INIT_PURCHASE)
    card.tear_next(Tear.BEFORE_UPDATE)
    with pytest.raises(PowerLost):
        card.process(h(DEBIT))
    ok(card, SELECT_APP)
    assert ok(card, "805C000204") == h("00002000")
    assert call(card, "805A000602000008")[1] == 0x9406
    ok(card, INIT_PURCHASE)
    card.tear_next(Tear.AFTER_UPDATE)
    with pytest.raises(PowerLost):
        card.process(h(DEBIT))
    ok(card, SELECT_APP)
    assert ok(card, "805C000204") == h("00001FFF")
    assert ok(card, "805A000602000008") == h("66B54A6B 8AF270DC")  # MAC2 || TAC


def test_detail_file_is_cyclic() -> None:
    card = v4_card()
    ok(card, SELECT_APP)
    card.state.purses[2].balance = 1000
    for _ in range(12):
        ok(card, INIT_PURCHASE)
        # the scripted random is zeros from here: MAC1 for rnd 0 from the pure functions
        ctr = card.state.purses[2].offline_ctr
        session = Des(pboc.offline_session_key(Des(V4_KEY), bytes(4), ctr, 7))
        when = datetime(2026, 1, 2, 3, 4, 5)
        mac1 = mac.pboc_mac(session, pboc.purchase_mac1_data(1, 6, h("001122334455"), when))
        ok(card, "805401000F00000007" + pboc.bcd_datetime(when).hex() + mac1.hex() + "08")
    ok(card, "0020000003123456")
    assert ok(card, "00B201C400")[:2] == h("000B")  # newest first
    assert ok(card, "00B20AC400")[:2] == h("0002")
    assert call(card, "00B20BC400")[1] == 0x6A83

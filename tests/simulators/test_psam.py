"""The virtual PSAM: V4's purchase MAC1 and MAC2 from the PSAM side, its files, key loading
under the transport key, and its status words."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from hsm import cardcrypto, mac, pboc
from hsm.des import Des
from simulators.psam import PsamState, VirtualPsam
from tests.support.cards import SELECT_APP, call, h, ok, v4_card
from tests.support.psam import SERIAL, TERM, TRANSPORT, v4_psam

# rnd | ctr | amount | type | date time | kv | alg  (V4's purchase)
V4_MAC1_INPUT = "584633C9" "0000" "00000001" "06" "20161216134600" "00" "00"


def test_v4_purchase_through_the_psam() -> None:
    psam = v4_psam()
    card = v4_card(["C903814D", "584633C9"])
    ok(card, SELECT_APP)
    ok(card, "805000020B0100002000001122334455" "10")
    ok(card, "805200000B" "20161216105800" "8AFA5718" "04")
    assert ok(psam, "00B0960006") == h(TERM)
    init = ok(card, "805001020B" "00" "00000001" + TERM + "0F")
    assert init[11:] == h("584633C9")
    out = ok(psam, "8070000014" + V4_MAC1_INPUT + "08")
    assert out == h("00000000 D45737C5")
    tac_mac2 = ok(card, "805401000F" + out[:4].hex() + "20161216134600" + out[4:].hex() + "08")
    assert tac_mac2 == h("8AF270DC 66B54A6B")
    ok(psam, "8072000004" + tac_mac2[4:].hex())
    assert call(psam, "8072000004" + tac_mac2[4:].hex())[1] == 0x6901  # one check per MAC1
    out = ok(psam, "8070000014" + V4_MAC1_INPUT + "08")
    assert out[:4] == h("00000001")  # the next serial
    assert call(psam, "807200000466B54A6C")[1] == 0x9302


def test_psam_key_loading_and_issuance_files(tmp_path: Path) -> None:
    path = tmp_path / "psam.json"
    psam = VirtualPsam(PsamState.blank(SERIAL, TRANSPORT), path=path)
    ok(psam, "00A40000023F00")
    assert ok(psam, "00B0950000")[:10] == SERIAL
    ok(psam, "00D6960006" + "000012345678")
    assert ok(psam, "00B0960006") == h("000012345678")
    master = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    stale = ok(psam, "0084000004")
    ok(psam, "0084000004")
    apdu = cardcrypto.protected_apdu(TRANSPORT, stale, h("84D40101"), h("22F0F00100") + master)
    assert call(psam, apdu)[1] == 0x6988  # MACed with an older challenge
    assert call(psam, apdu)[1] == 0x6984  # and that one is used up
    challenge = ok(psam, "0084000004")
    bad = cardcrypto.protected_apdu(TRANSPORT, challenge, h("84D40101"), h("21F0F00100") + master)
    assert call(psam, bad)[1] == 0x6A80  # not a purchase key
    challenge = ok(psam, "0084000004")
    good = cardcrypto.protected_apdu(TRANSPORT, challenge, h("84D40101"), h("22F0F00100") + master)
    ok(psam, good)
    assert call(psam, "00D6960006" + "000012345679")[1] == 0x6982  # fixed once issued
    # purchase MAC1 with one level of diversification by the card's factor
    factor = h("1122334455667788")
    out = ok(psam, "807000001C" + V4_MAC1_INPUT[:-4] + "0100" + factor.hex() + "08")
    card_key = pboc.diversify(Des(master), factor)
    session = Des(pboc.offline_session_key(Des(card_key), h("584633C9"), 0, 1))
    when = datetime(2016, 12, 16, 13, 46)
    expected = mac.pboc_mac(session, pboc.purchase_mac1_data(1, 6, h("000012345678"), when))
    assert out == h("00000001") + expected
    assert VirtualPsam.load(path).state.term_serial == 2


def test_psam_status_words() -> None:
    psam = v4_psam()
    assert call(psam, "00A40000020099")[1] == 0x6A82
    assert call(psam, "0084000005")[1] == 0x6700
    assert call(psam, "00B0990000")[1] == 0x6A82
    assert call(psam, "00B0961000")[1] == 0x6B00
    assert call(psam, "00B0000000")[1] == 0x6A86
    assert call(psam, "8070000014" + V4_MAC1_INPUT[:-4] + "0500" + "08")[1] == 0x6A88
    assert call(psam, "807000001C" + V4_MAC1_INPUT + "1122334455667788" + "08")[1] == 0x6A80
    assert call(psam, "8070000013" + V4_MAC1_INPUT[:-2] + "08")[1] == 0x6700
    assert call(psam, "8072000004" + "00000000")[1] == 0x6901
    assert call(psam, "80EE000000")[1] == 0x6D00
    assert call(psam, "B0B0960006")[1] == 0x6E00
    assert call(psam, "84D4010104" + "00000000")[1] == 0x6984

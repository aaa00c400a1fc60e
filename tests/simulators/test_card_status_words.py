"""Every status word the virtual card answers, each from the APDU that provokes it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from hsm import cardcrypto, mac, pboc
from hsm.des import Des
from simulators.card import VirtualCard
from tests.support.cards import (
    DAMK,
    DRPK,
    SELECT_APP,
    TERMINAL,
    V4_KEY,
    call,
    h,
    ok,
    v4_card,
)

INIT_LOAD_EP = "805000020B0100002000001122334455" "10"
INIT_PURCHASE_EP = "805001020B" "00" "00000001" "001122334455" "0F"
CREDIT_V4 = "805200000B" "20161216105800" "8AFA5718" "04"


def in_app(randoms: tuple[str, ...] = ()) -> VirtualCard:
    card = v4_card(randoms)
    ok(card, SELECT_APP)
    return card


def line_protected(card: VirtualCard, key: bytes, command: str) -> bytes:
    challenge = ok(card, "0084000004")
    body = h(command)
    return body + cardcrypto.line_mac(key, challenge, body)


def setup_none(card: VirtualCard) -> None:
    return None


def setup_verify(card: VirtualCard) -> None:
    ok(card, "0020000003123456")


def setup_init_load(card: VirtualCard) -> None:
    ok(card, INIT_LOAD_EP)


def setup_max_counter(card: VirtualCard) -> None:
    card.state.purses[2].online_ctr = 0xFFFF


def setup_full_purse(card: VirtualCard) -> None:
    card.state.purses[2].balance = 0xFFFFF000


def setup_init_load_eeprom(card: VirtualCard) -> None:
    ok(card, INIT_LOAD_EP)
    card.eeprom_fails = True


def setup_mf(card: VirtualCard) -> None:
    ok(card, "00A40000023F00")


def setup_card_blocked(card: VirtualCard) -> None:
    card.state.card_blocked = True


def setup_no_pin(card: VirtualCard) -> None:
    card.state.pin = None


CASES: list[tuple[str, Callable[[VirtualCard], None], str, int]] = [
    ("select by name", setup_none, SELECT_APP, 0x9000),
    ("select EF 0015", setup_none, "00A40000020015", 0x9000),
    ("select unknown name", setup_none, "00A4040003A00001", 0x6A82),
    ("select unknown fid", setup_none, "00A40000020099", 0x6A82),
    ("select wrong P1P2", setup_none, "00A40001020015", 0x6A86),
    ("select short fid", setup_none, "00A400000100", 0x6700),
    ("bad Lc", setup_none, "00A4040006D156", 0x6700),
    ("short APDU", setup_none, "00A4", 0x6700),
    ("unknown CLA", setup_none, "B0B0950000", 0x6E00),
    ("unknown INS", setup_none, "80EE000000", 0x6D00),
    ("not in the application", setup_mf, "805C000204", 0x6985),
    ("challenge of 5 bytes", setup_none, "0084000005", 0x6700),
    ("challenge with P1", setup_none, "0084010004", 0x6A86),
    ("ED balance without PIN", setup_none, "805C000104", 0x6982),
    ("EP balance", setup_none, "805C000204", 0x9000),
    ("balance of purse 3", setup_none, "805C000304", 0x6A86),
    ("ED balance after VERIFY", setup_verify, "805C000104", 0x9000),
    ("VERIFY wrong PIN", setup_none, "0020000003123457", 0x63C2),
    ("VERIFY P2", setup_none, "0020000103123456", 0x6A86),
    ("VERIFY 7-byte PIN", setup_none, "002000000712345612345612", 0x6700),
    ("VERIFY without a PIN", setup_no_pin, "0020000003123456", 0x6A88),
    ("CHANGE PIN malformed", setup_none, "805E0100031234FF", 0x6A80),
    ("PIN command P1", setup_none, "805E0200031234FF", 0x6A86),
    ("RELOAD PIN bad MAC", setup_none, "805E000007123456" "00000000", 0x9302),
    ("RELOAD PIN short", setup_none, "805E0000031234FF", 0x6700),
    ("INIT LOAD", setup_none, INIT_LOAD_EP, 0x9000),
    ("INIT LOAD unknown key", setup_none, "805000020B0700002000001122334455" "10", 0x9403),
    ("INIT LOAD ED without PIN", setup_none, "805000010B0100002000001122334455" "10", 0x6982),
    ("INIT LOAD counter at max", setup_max_counter, INIT_LOAD_EP, 0x9402),
    ("INIT LOAD over the maximum", setup_full_purse, INIT_LOAD_EP, 0x6985),
    ("INIT LOAD short", setup_none, "805000020A01000020000011223344" "10", 0x6700),
    ("INIT of purse 3", setup_none, "805000030B0100002000001122334455" "10", 0x6A86),
    ("INIT unknown kind", setup_none, "805009020B0100002000001122334455" "10", 0x6A86),
    ("UNLOAD of the EP", setup_none, "805005020B0100002000001122334455" "10", 0x6A86),
    ("INIT PURCHASE over balance", setup_none, INIT_PURCHASE_EP, 0x9401),
    ("INIT OVERDRAW refused", setup_verify, "805004010700001122334455" "13", 0x6A81),
    ("UPDATE OVERDRAW refused", setup_verify, "805800000E" + "00" * 14 + "04", 0x6A81),
    ("CREDIT without INIT", setup_none, CREDIT_V4, 0x6901),
    ("DEBIT without INIT", setup_none, "805401000F" + "00" * 15 + "08", 0x6901),
    ("DEBIT P1", setup_init_load, "805402000F" + "00" * 15 + "08", 0x6A86),
    ("CREDIT bad date", setup_init_load, "805200000B" "20161316105800" "8AFA5718" "04", 0x6A80),
    ("CREDIT bad MAC2", setup_init_load, "805200000B" "20161216105800" "8AFA5719" "04", 0x9302),
    ("CREDIT on EEPROM failure", setup_init_load_eeprom, CREDIT_V4, 0x6581),
    ("PROVE nothing", setup_none, "805A000202000008", 0x9406),
    ("PROVE short", setup_none, "805A00020100", 0x6700),
    ("READ BINARY 0015 by SFI", setup_none, "00B0950000", 0x9000),
    ("READ BINARY offset beyond", setup_none, "00B0952000", 0x6B00),
    ("READ BINARY unknown SFI", setup_none, "00B09E0000", 0x6A82),
    ("READ BINARY purse", setup_none, "00B0820000", 0x6981),
    ("READ BINARY no current EF", setup_none, "00B0000000", 0x6985),
    ("UPDATE BINARY in clear", setup_none, "00D6950002AAAA", 0x6982),
    ("UPDATE BINARY no challenge", setup_none, "04D6950006AAAA00000000", 0x6984),
    ("READ RECORD without PIN", setup_none, "00B201C400", 0x6982),
    ("READ RECORD empty log", setup_verify, "00B201C400", 0x6A83),
    ("READ RECORD binary file", setup_verify, "00B201AC00", 0x6981),
    ("READ RECORD unknown SFI", setup_verify, "00B2019C00", 0x6A82),
    ("READ RECORD P2", setup_verify, "00B201C000", 0x6A86),
    ("WRITE KEY no challenge", setup_none, "84D4010110" + "00" * 16, 0x6984),
    ("APP UNBLOCK not blocked", setup_none, "", 0x6985),
    ("card blocked", setup_card_blocked, "805C000204", 0x6A81),
]


@pytest.mark.parametrize(("setup", "apdu", "sw"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_status_word(setup: Callable[[VirtualCard], None], apdu: str, sw: int) -> None:
    card = in_app(("C903814D",))
    setup(card)
    if not apdu:  # APPLICATION UNBLOCK of an application that is not blocked
        assert call(card, line_protected(card, DAMK, "8418000004"))[1] == sw
        return
    assert call(card, apdu)[1] == sw


def test_line_protection_mac_errors() -> None:
    card = in_app()
    ok(card, "0084000004")
    assert call(card, "04D6950006AAAA00000000")[1] == 0x6988
    assert call(card, "04D6950006AAAA00000000")[1] == 0x6984  # the challenge is used up
    assert call(card, line_protected(card, DAMK, "04D6950006AAAA"))[1] == 0x9000
    assert ok(card, "00B0950002") == h("AAAA")
    assert call(card, line_protected(card, DAMK, "04D695FF06AAAA"))[1] == 0x6B00
    assert call(card, line_protected(card, DAMK, "04D6951C06AAAAAAAA"))[1] == 0x6700
    # WRITE KEY MACed with a key other than the control key
    assert call(card, line_protected(card, DAMK, "84D4010114" + "00" * 16))[1] == 0x6988


def test_pin_blocking_and_reload() -> None:
    card = in_app()
    assert [call(card, "0020000003000000")[1] for _ in range(4)] == [0x63C2, 0x63C1, 0x6983, 0x6983]
    assert card.state.pin_tries_left == 0
    assert call(card, "0020000003123456")[1] == 0x6983
    assert call(card, "805E0100071234 56FF 654321".replace(" ", ""))[1] == 0x6983
    reload_mac = mac.pboc_mac(Des(pboc.tac_key(DRPK)), h("987654"))
    ok(card, "805E000007987654" + reload_mac.hex())
    ok(card, "0020000003987654")
    assert call(card, "0020000003000000")[1] == 0x63C2
    ok(card, "0020000003987654")  # a good PIN resets the count
    assert card.state.pin_tries_left == 3
    ok(card, "805E010007987654FF112233")
    assert call(card, "0020000003987654")[1] == 0x63C2
    ok(card, "0020000003112233")


def test_unload_mac3_and_prove() -> None:
    card = v4_card(["11223344", "C903814D"])
    ok(card, SELECT_APP)
    ok(card, "0020000003123456")
    card.state.purses[1].balance = 5000
    init = ok(card, "805005010B" "01" "00001000" + TERMINAL.hex() + "10")
    assert init[:8] == h("00001388 0000 01 00")
    session = Des(pboc.online_session_key(Des(V4_KEY), init[8:12], 0))
    assert init[12:] == mac.pboc_mac(session, pboc.load_mac1_data(5000, 0x1000, 3, TERMINAL))
    when = datetime(2026, 11, 25, 8, 0, 0)
    mac2 = mac.pboc_mac(session, pboc.load_mac2_data(0x1000, 3, TERMINAL, when))
    mac3 = ok(card, "805403000B" + pboc.bcd_datetime(when).hex() + mac2.hex() + "04")
    expected = pboc.online_result_data(5000 - 0x1000, 0, 0x1000, 3, TERMINAL, when)
    assert mac3 == mac.pboc_mac(session, expected)
    assert ok(card, "805C000104") == (5000 - 0x1000).to_bytes(4, "big")
    assert ok(card, "805A000302000008")[:4] == mac3
    assert call(card, "805A000302000108")[1] == 0x9406
    # the detail record: ctr before, overdraft, amount, type, terminal, date, time
    record = ok(card, "00B201C400")
    assert record == h("0000 000000 00001000 03") + TERMINAL + pboc.bcd_datetime(when)


def test_a_fault_inside_the_card_is_6f00() -> None:
    card = in_app(("C903814D",))
    card.state.keys[(0x3F, 1)].value = bytes(5)  # a damaged key: DES refuses it
    assert call(card, INIT_LOAD_EP)[1] == 0x6F00
    assert call(card, "805C000204")[1] == 0x9000  # and the card goes on answering


@pytest.mark.parametrize(("p1", "purse", "txn_type"), [(0x02, 1, 0x04), (0x03, 2, 0x09)])
def test_cash_withdraw_and_capp_purchase(p1: int, purse: int, txn_type: int) -> None:
    card = in_app(("584633C9",))
    ok(card, "0020000003123456")
    card.state.purses[purse].balance = 100
    init = ok(card, bytes([0x80, 0x50, p1, purse, 0x0B, 0x00]) + h("00000001") + TERMINAL
              + b"\x0f")
    assert init[:6] == h("00000064 0000")
    when = datetime(2016, 12, 16, 13, 46)
    session = Des(pboc.offline_session_key(Des(V4_KEY), h("584633C9"), 0, 0))
    mac1 = mac.pboc_mac(session, pboc.purchase_mac1_data(1, txn_type, TERMINAL, when))
    out = ok(card, "805401000F00000000" + pboc.bcd_datetime(when).hex() + mac1.hex() + "08")
    tac_key = Des(pboc.tac_key(V4_KEY))
    assert out[:4] == mac.pboc_mac(tac_key, pboc.purchase_tac_data(1, txn_type, TERMINAL, 0,
                                                                   when))
    assert card.state.purses[purse].balance == 99
    assert card.state.purses[purse].offline_ctr == 1
    assert ok(card, "00B201C400")[9] == txn_type

"""The virtual card reproduces reference V4 (a real FM1208 trace) given the same keys and
inputs."""

from __future__ import annotations

from tests.support.cards import SELECT_APP, call, h, ok, v4_card


def test_v4_load_then_purchase() -> None:
    card = v4_card(["C903814D", "584633C9"])
    ok(card, SELECT_APP)
    init = ok(card, "805000020B0100002000001122334455" "10")
    assert init == h("00000000 0000 01 00 C903814D 03976C22")
    tac = ok(card, "805200000B" "20161216105800" "8AFA5718" "04")
    assert tac == h("FA00066D")
    assert ok(card, "805C000204") == h("00002000")

    init = ok(card, "805001020B" "00" "00000001" "001122334455" "0F")
    assert init == h("00002000 0000 000000 00 00 584633C9")
    out = ok(card, "805401000F" "00000000" "20161216134600" "D45737C5" "08")
    assert out == h("8AF270DC 66B54A6B")
    assert ok(card, "805C000204") == h("00001FFF")


def test_v4_wrong_mac2_leaves_the_card_as_it_was() -> None:
    card = v4_card(["C903814D"])
    ok(card, SELECT_APP)
    ok(card, "805000020B0100002000001122334455" "10")
    _, sw = call(card, "805200000B" "20161216105800" "8AFA5719" "04")
    assert sw == 0x9302
    assert ok(card, "805C000204") == h("00000000")
    _, sw = call(card, "805200000B" "20161216105800" "8AFA5718" "04")
    assert sw == 0x6901  # the session died with the failed CREDIT

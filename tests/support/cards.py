"""Helpers for the card tests: cards with known keys, random bytes from a script, APDU calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from simulators.card import CardKey, CardState, VirtualCard
from simulators.card.state import (
    KEY_APP_MAINT,
    KEY_LOAD,
    KEY_PIN_RELOAD,
    KEY_PIN_UNBLOCK,
    KEY_PURCHASE,
    KEY_TAC,
    KEY_UNLOAD,
)
from switch.card_io.connection import InProcessCard

V4_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
SERIAL = bytes.fromhex("0000" "1122334455667788")
CONTROL = bytes.fromhex("5566778899AABBCCDDEEFF0011223344")
TERMINAL = bytes.fromhex("001122334455")
DAMK = bytes.fromhex("445566778899AABBCCDDEEFF00112233")
DRPK = bytes.fromhex("2233445566778899AABBCCDDEEFF0011")
DPUK = bytes.fromhex("33445566778899AABBCCDDEEFF001122")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def scripted(values: Iterable[str]) -> Callable[[int], bytes]:
    """random_bytes that hands out the given hex values in turn (then zeros)."""
    pending = [h(v) for v in values]

    def random_bytes(n: int) -> bytes:
        if pending:
            value = pending.pop(0)
            assert len(value) == n, f"scripted random of {len(value)} bytes, card asked {n}"
            return value
        return bytes(n)

    return random_bytes


def v4_card(
    randoms: Iterable[str] = (), path: Path | None = None, pin: str | None = "123456"
) -> VirtualCard:
    """The V4 card: DLK (index 01, version 01) = DPK (index 00) = DTK = the V4 key, plus
    maintenance, PIN reload and unblock keys, PIN 123456 with 3 tries."""
    state = CardState.blank(SERIAL, CONTROL)
    for key in (
        CardKey(KEY_LOAD, 1, 1, 0, V4_KEY),
        CardKey(KEY_PURCHASE, 0, 0, 0, V4_KEY),
        CardKey(KEY_TAC, 0, 0, 0, V4_KEY),
        CardKey(KEY_UNLOAD, 1, 1, 0, V4_KEY),
        CardKey(KEY_APP_MAINT, 0, 1, 0, DAMK),
        CardKey(KEY_PIN_RELOAD, 0, 1, 0, DRPK),
        CardKey(KEY_PIN_UNBLOCK, 0, 1, 0, DPUK),
    ):
        state.keys[(key.key_type, key.index)] = key
    if pin is not None:
        state.pin = h(pin)
    card = VirtualCard(state, path=path, random_bytes=scripted(randoms))
    card.power_on()
    return card


def call(card: InProcessCard, apdu: str | bytes) -> tuple[bytes, int]:
    raw = h(apdu) if isinstance(apdu, str) else apdu
    out = card.process(raw)
    return out[:-2], int.from_bytes(out[-2:], "big")


def ok(card: InProcessCard, apdu: str | bytes) -> bytes:
    data, sw = call(card, apdu)
    assert sw == 0x9000, f"{sw:04X}"
    return data


SELECT_APP = "00A4040006D15600000503"

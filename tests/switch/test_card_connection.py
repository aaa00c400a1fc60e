"""The card connection's two implementations: DirectConnection on an in-process card, and
PcscConnection's T=0 handling (61xx, 6Cxx) and error mapping on a stand-in pyscard
connection. The real PC/SC stack is exercised in test_pcsc.py."""

from __future__ import annotations

from typing import Any

import pytest

from simulators.card import PowerLost
from switch.card_io import connection as cc
from switch.card_io.connection import (
    ApduError,
    CardConnectionError,
    CardRemovedError,
    DirectConnection,
    PcscConnection,
    expect,
)
from tests.support.cards import SELECT_APP, h, v4_card


def test_direct_connection_round_trip() -> None:
    card = v4_card()
    conn = DirectConnection(card, reader_name="bench slot 1")
    assert conn.reader_name == "bench slot 1"
    with pytest.raises(CardConnectionError):
        conn.transmit(h(SELECT_APP))
    assert conn.connect() == card.atr
    data, sw = conn.transmit(h(SELECT_APP))
    assert sw == 0x9000 and data[:2] == h("6F0E")
    assert conn.transmit(h("805C000104")) == (b"", 0x6982)
    with pytest.raises(ApduError) as err:
        expect(conn, h("805C000104"), "GET BALANCE")
    assert err.value.sw == 0x6982 and "6982" in str(err.value)
    conn.disconnect()
    assert not card.powered


def test_power_lost_is_a_removed_card() -> None:
    assert issubclass(PowerLost, CardRemovedError)

    class Short:
        def power_on(self) -> bytes:
            return b"\x3b\x00"

        def power_off(self) -> None:
            pass

        def process(self, apdu: bytes) -> bytes:
            return b"\x90"

    conn = DirectConnection(Short())
    conn.connect()
    with pytest.raises(CardConnectionError):
        conn.transmit(h("00A4000000"))


class FakePyscard:
    """A pyscard CardConnection answering from a script of (data, sw1, sw2)."""

    def __init__(self, answers: list[tuple[list[int], int, int]]) -> None:
        self.answers = answers
        self.sent: list[bytes] = []

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        self.sent.append(bytes(apdu))
        if not self.answers:
            raise RuntimeError("card gone")
        return self.answers.pop(0)

    def disconnect(self) -> None:
        pass


def connected(fake: FakePyscard) -> PcscConnection:
    conn = PcscConnection("Virtual PCD")
    conn._conn = fake  # stand in for connect(), which needs pcscd
    return conn


def test_pcsc_get_response_and_wrong_le() -> None:
    fake = FakePyscard([([], 0x61, 0x04), ([1, 2, 3, 4], 0x90, 0x00)])
    assert connected(fake).transmit(h("805C000204")) == (h("01020304"), 0x9000)
    assert fake.sent[1] == h("00C0000004")
    fake = FakePyscard([([], 0x6C, 0x08), ([9] * 8, 0x90, 0x00)])
    assert connected(fake).transmit(h("0084000004")) == (bytes([9] * 8), 0x9000)
    assert fake.sent[1] == h("0084000008")
    endless: list[tuple[list[int], int, int]] = [([1], 0x61, 0x01)] * 40
    data, sw = connected(FakePyscard(endless)).transmit(h("00B0950000"))
    assert sw == 0x6101 and len(data) == 1 + cc.GET_RESPONSE_ROUNDS_MAX  # bounded


def test_pcsc_errors() -> None:
    conn = connected(FakePyscard([]))
    with pytest.raises(CardRemovedError):
        conn.transmit(h("00A4000000"))
    with pytest.raises(CardConnectionError):  # disconnected after the failure
        conn.transmit(h("00A4000000"))


def test_pcsc_without_pyscard(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_smartcard(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("smartcard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_smartcard)
    with pytest.raises(CardConnectionError, match="pyscard is not installed"):
        cc.pcsc_readers()

"""The card connection: how the switch's tools (issuance, the POS and kiosk simulators) talk
to a card or a PSAM, whatever holds it.

Two implementations of one small interface:

- `DirectConnection` wraps an in-process card object (`power_on() -> ATR`,
  `power_off()`, `process(apdu) -> data || SW`): the simulators' cards, for fast tests;
- `PcscConnection` goes through PC/SC with pyscard (the optional extra `pcsc`): a real reader,
  or the vsmartcard virtual reader "Virtual PCD 00 00" in which the simulators sit.

`transmit` is blocking (a card answers in milliseconds; async callers use
`asyncio.to_thread` for a real reader) and returns `(data, sw)` with the status word as an int.
T=0 conventions are handled for real cards: 61xx fetches the rest with GET RESPONSE, 6Cxx
resends with the right Le.

>>> class Echo:
...     def power_on(self) -> bytes: return b"\\x3b\\x00"
...     def power_off(self) -> None: pass
...     def process(self, apdu: bytes) -> bytes: return apdu[4:] + b"\\x90\\x00"
>>> conn = DirectConnection(Echo())
>>> conn.connect().hex()
'3b00'
>>> conn.transmit(bytes.fromhex("00000000AB"))
(b'\\xab', 36864)
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

GET_RESPONSE_ROUNDS_MAX = 16


class CardConnectionError(Exception):
    """No card, no reader, or the card stopped answering. Carries no card data."""


class CardRemovedError(CardConnectionError):
    """The card lost power or left the reader in the middle of a command."""


class ApduError(CardConnectionError):
    """A command the caller required to succeed ended with another status word."""

    def __init__(self, what: str, sw: int) -> None:
        super().__init__(f"{what}: status {sw:04X}")
        self.sw = sw


class CardConnection(Protocol):
    @property
    def reader_name(self) -> str: ...

    def connect(self) -> bytes:
        """Power the card and return its ATR."""
        ...

    def disconnect(self) -> None: ...

    def transmit(self, apdu: bytes) -> tuple[bytes, int]: ...


class InProcessCard(Protocol):
    """What `DirectConnection` drives: a card object living in this process."""

    def power_on(self) -> bytes: ...

    def power_off(self) -> None: ...

    def process(self, apdu: bytes) -> bytes: ...


def expect(conn: CardConnection, apdu: bytes, what: str, sw: int = 0x9000) -> bytes:
    """Send `apdu`, require status `sw`, return the data."""
    data, got = conn.transmit(apdu)
    if got != sw:
        raise ApduError(what, got)
    return data


class DirectConnection:
    def __init__(self, card: InProcessCard, reader_name: str = "direct") -> None:
        self._card = card
        self._name = reader_name
        self._connected = False

    @property
    def reader_name(self) -> str:
        return self._name

    def connect(self) -> bytes:
        self._connected = True
        return self._card.power_on()

    def disconnect(self) -> None:
        if self._connected:
            self._card.power_off()
        self._connected = False

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if not self._connected:
            raise CardConnectionError(f"{self._name}: not connected")
        try:
            out = self._card.process(apdu)
        except CardRemovedError:
            self._connected = False
            raise
        if len(out) < 2:
            raise CardConnectionError(f"{self._name}: response shorter than a status word")
        return out[:-2], int.from_bytes(out[-2:], "big")


def pcsc_readers() -> list[str]:
    """The PC/SC readers' names; CardConnectionError when pyscard or pcscd is missing."""
    try:
        from smartcard.System import readers  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as exc:  # the optional extra is not installed
        raise CardConnectionError("pyscard is not installed (pip install '.[pcsc]')") from exc
    try:
        return [str(r) for r in readers()]
    except Exception as exc:  # pyscard raises its own types, and OSError-likes from pcsclite
        raise CardConnectionError(f"PC/SC unavailable: {type(exc).__name__}") from exc


class PcscConnection:
    """A card in a PC/SC reader: `reader` is a reader name or a unique part of one."""

    def __init__(self, reader: str) -> None:
        self._wanted = reader
        self._name = reader
        self._conn: Any = None

    @property
    def reader_name(self) -> str:
        return self._name

    def connect(self) -> bytes:
        names = [n for n in pcsc_readers() if self._wanted in n]
        if len(names) != 1:
            raise CardConnectionError(f"{len(names)} readers match {self._wanted!r}")
        self._name = names[0]
        from smartcard.System import readers  # type: ignore[import-untyped, import-not-found, unused-ignore]

        reader = next(r for r in readers() if str(r) == self._name)
        conn = reader.createConnection()
        try:
            conn.connect()
            atr = bytes(conn.getATR())
        except Exception as exc:
            self._conn = conn
            self.disconnect()
            raise CardConnectionError(f"{self._name}: {type(exc).__name__}") from exc
        self._conn = conn
        return atr

    def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone: nothing left to release
                conn.disconnect()
            release = getattr(conn, "release", None)  # pyscard >= 2.1: the PC/SC context too
            if release is not None:
                with contextlib.suppress(Exception):
                    release()

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw = self._raw(apdu)
        if sw >> 8 == 0x6C and len(apdu) >= 5:  # wrong Le: resend with the card's
            data, sw = self._raw(apdu[:-1] + bytes([sw & 0xFF]))
        rounds = 0
        while sw >> 8 == 0x61 and rounds < GET_RESPONSE_ROUNDS_MAX:
            more, sw = self._raw(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
            data += more
            rounds += 1
        return data, sw

    def _raw(self, apdu: bytes) -> tuple[bytes, int]:
        if self._conn is None:
            raise CardConnectionError(f"{self._name}: not connected")
        try:
            data, sw1, sw2 = self._conn.transmit(list(apdu))
        except Exception as exc:
            self.disconnect()
            raise CardRemovedError(f"{self._name}: {type(exc).__name__}") from exc
        return bytes(data), (sw1 << 8) | sw2

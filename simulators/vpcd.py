"""A vsmartcard vpcd client: puts an in-process card (VirtualCard, VirtualPsam) into a real
PC/SC reader. pcscd with Debian's `vsmartcard-vpcd` driver listens on 127.0.0.1:35963 (reader
"Virtual PCD 00 00") and 35964 ("… 00 01"); this side connects to it.

Frames both ways: 2-byte big-endian length, payload. A one-byte payload from vpcd is a control
message (00 power off, 01 power on, 02 reset, 04 get ATR — only the last one is answered);
anything longer is a command APDU, answered with the R-APDU. When the card loses power in the
middle of a command (tearing) the client hangs up, so the reader sees the card leave, and
comes back after a moment, as a card put back in.

    client = VpcdClient(card, port=35963)
    client.start()      # a daemon thread, reconnecting until stop()
    ...
    client.stop()

Run by hand: `python -m simulators.vpcd card.json [--psam | --keycard] [--port 35963]`.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import threading
from pathlib import Path

from switch.card_io.connection import CardRemovedError, InProcessCard

VPCD_PORT = 35963
POWER_OFF, POWER_ON, RESET, GET_ATR = 0x00, 0x01, 0x02, 0x04
POLL_S = 0.2
RECONNECT_S = 0.2
REMOVED_S = 1.5  # a torn card stays out long enough for pcscd's presence poll to notice


class VpcdClient:
    def __init__(
        self, card: InProcessCard, *, host: str = "127.0.0.1", port: int = VPCD_PORT
    ) -> None:
        self.card = card
        self.host = host
        self.port = port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.commands = 0  # APDUs answered, for tests

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"vpcd:{self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def run(self) -> None:
        """Connect, serve, reconnect after a hang-up, until stop() (one bounded wait each)."""
        while not self._stop.is_set():
            torn = False
            try:
                with socket.create_connection((self.host, self.port), timeout=POLL_S) as sock:
                    self.connected.set()
                    torn = self._serve(sock)
            except OSError:
                pass  # pcscd not (yet) listening, or it hung up: try again shortly
            finally:
                self.connected.clear()
            self._stop.wait(REMOVED_S if torn else RECONNECT_S)

    def _serve(self, sock: socket.socket) -> bool:
        """Answer until the peer or stop() ends it (False) or the card is torn (True)."""
        sock.settimeout(POLL_S)
        while not self._stop.is_set():
            payload = self._receive(sock)
            if payload is None:
                return False
            if len(payload) == 1:
                answer = self._control(payload[0])
                if answer is not None:
                    _send(sock, answer)
                continue
            try:
                response = self.card.process(payload)
            except CardRemovedError:
                return True  # torn: hang up, the reader sees the card go
            self.commands += 1
            _send(sock, response)
        return False

    def _control(self, code: int) -> bytes | None:
        if code == POWER_OFF:
            self.card.power_off()
        elif code in (POWER_ON, RESET):
            self.card.power_off()
            self.card.power_on()
        elif code == GET_ATR:
            return _atr(self.card)
        return None

    def _receive(self, sock: socket.socket) -> bytes | None:
        """One frame; None when the peer closed or stop() was called."""
        header = self._exactly(sock, 2)
        if header is None:
            return None
        (length,) = struct.unpack(">H", header)
        return self._exactly(sock, length)

    def _exactly(self, sock: socket.socket, count: int) -> bytes | None:
        data = b""
        while len(data) < count:
            if self._stop.is_set():
                return None
            try:
                chunk = sock.recv(count - len(data))
            except TimeoutError:
                continue
            if not chunk:
                return None
            data += chunk
        return data


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def _atr(card: InProcessCard) -> bytes:
    atr = getattr(card, "atr", None)
    return atr if isinstance(atr, bytes) else card.power_on()


def main(argv: list[str] | None = None) -> None:
    from simulators.card import VirtualCard
    from simulators.psam import VirtualPsam

    parser = argparse.ArgumentParser(description="Put a virtual card or PSAM into vpcd.")
    parser.add_argument("state", type=Path, help="the card's (or PSAM's) JSON state file")
    parser.add_argument("--psam", action="store_true", help="the file holds a PSAM")
    parser.add_argument("--keycard", action="store_true", help="the file holds a key card")
    parser.add_argument("--port", type=int, default=VPCD_PORT)
    args = parser.parse_args(argv)
    card: InProcessCard
    if args.keycard:
        from simulators.keycard import VirtualKeyCard

        card = VirtualKeyCard.load(args.state)
    else:
        card = VirtualPsam.load(args.state) if args.psam else VirtualCard.load(args.state)
    client = VpcdClient(card, port=args.port)
    with contextlib.suppress(KeyboardInterrupt):
        client.run()


if __name__ == "__main__":
    main()

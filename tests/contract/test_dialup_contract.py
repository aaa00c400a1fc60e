"""specs/dialup.md, from the spec alone: `medswitch nac run` as a subprocess with a table written
here, its pseudo-terminal lines opened as a POS's modem port, and a host that records what the
controller forwards. The dialogue, both framings (LRC and ACK/NAK computed here), the TPDU
rewrite and its return, a routing miss dropping the line, `medswitch nac status`."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

MEDSWITCH = str(Path(sys.executable).parent / "medswitch")
NUMBER = "95566"
READ_S = 10.0
BODY = bytes(range(40))


class Host:
    """A host on 127.0.0.1: 2-byte length frames in; each answered with its TPDU's
    destination and source swapped and ``!`` appended (as the spec says a host replies)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        with connection:
            buffer = b""
            for _ in range(10_000):
                data = connection.recv(65536)
                if not data:
                    return
                buffer += data
                while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                    size = int.from_bytes(buffer[:2], "big")
                    frame, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                    self.received.append(frame)
                    answer = frame[:1] + frame[3:5] + frame[1:3] + frame[5:] + b"!"
                    connection.sendall(len(answer).to_bytes(2, "big") + answer)

    def close(self) -> None:
        self.server.close()


def stx(data: bytes) -> bytes:
    body = bytes.fromhex(f"{len(data):04d}") + data + b"\x03"
    lrc = 0
    for byte in body:
        lrc ^= byte
    return b"\x02" + body + bytes([lrc])


class Port:
    """A POS's modem port: the line's link opened raw."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_until(self, end: bytes) -> bytes:
        seen = b""
        deadline = time.monotonic() + READ_S
        while not seen.endswith(end):
            left = deadline - time.monotonic()
            assert left > 0, f"{end!r} not read; got {seen!r}"
            select.select([self.fd], [], [], left)
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the controller closed the line
                return seen + b"<hung up>"
            if not data:
                return seen + b"<hung up>"
            seen += data
        return seen

    def read_exactly(self, count: int) -> bytes:
        seen = b""
        deadline = time.monotonic() + READ_S
        while len(seen) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{count} bytes not read; got {seen!r}"
            select.select([self.fd], [], [], left)
            try:
                seen += os.read(self.fd, count - len(seen))
            except BlockingIOError:
                continue
            except OSError:
                return seen
        return seen

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Host]]:
    home = tmp_path_factory.mktemp("nac")
    host = Host()
    (home / "nac.toml").write_text(
        "[nac]\n"
        f'numbers = ["{NUMBER}"]\n'
        "status_port = 0\n"
        'status_file = "nac.url"\n'
        "answer_timeout_s = 5\n"
        "escape_guard_s = 0.2\n"
        '[[lines]]\nname = "cup1"\npty = "lines/cup1"\nspeed_bps = 9600\nframing = "cup"\n'
        '[[lines]]\nname = "stx2"\npty = "lines/stx2"\nspeed_bps = 9600\nframing = "stx"\n'
        f'[[routes]]\nnii = "0003"\nhosts = ["127.0.0.1:{host.port}"]\n'
    )
    process = subprocess.Popen(
        [MEDSWITCH, "nac", "run", "--table", "nac.toml"],
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("medswitch nac serving")
        yield home, host
    finally:
        process.terminate()
        process.wait(timeout=30)
        host.close()


def connect(port: Port) -> None:
    port.write(b"ATZ\r")
    assert port.read_until(b"OK\r\n") == b"ATZ\r\r\nOK\r\n"  # echo on after ATZ
    port.write(b"ATE0\r")
    assert port.read_until(b"OK\r\n") == b"ATE0\r\r\nOK\r\n"
    port.write(f"ATDT 9,{NUMBER}\r".encode())  # the digits after the last pause
    assert port.read_until(b"9600\r\n") == b"\r\nCONNECT 9600\r\n"


def test_the_dialogue_and_a_number_not_answered(controller: tuple[Path, Host]) -> None:
    home, _ = controller
    port = Port(home / "lines" / "stx2")
    try:
        port.write(b"AT\r")
        assert port.read_until(b"OK\r\n") == b"AT\r\r\nOK\r\n"
        port.write(b"ATE0 X4 S7=30\r")
        assert port.read_until(b"OK\r\n") == b"ATE0 X4 S7=30\r\r\nOK\r\n"
        port.write(b"ATG\r")
        assert port.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
        port.write(b"ATO\r")
        assert port.read_until(b"CARRIER\r\n") == b"\r\nNO CARRIER\r\n"
        port.write(b"ATDT 12345\r")
        assert port.read_until(b"ANSWER\r\n") == b"\r\nNO ANSWER\r\n"
    finally:
        port.close()


def test_cup_frames_and_the_tpdu_rewrite(controller: tuple[Path, Host]) -> None:
    home, host = controller
    port = Port(home / "lines" / "cup1")
    try:
        connect(port)
        before = len(host.received)
        request = bytes.fromhex("6000031234") + BODY
        port.write(len(request).to_bytes(2, "big") + request)
        answer = port.read_exactly(2 + len(request) + 1)
        # the POS sees its own TPDU back, swapped as a reply swaps it
        assert (
            answer
            == (len(request) + 1).to_bytes(2, "big") + bytes.fromhex("6012340003") + BODY + b"!"
        )
        forwarded = host.received[before]
        # the source names line 1 (top ten bits) and the call on it (low six bits)
        assert forwarded[:3] + forwarded[5:] == bytes.fromhex("600003") + BODY
        source = int.from_bytes(forwarded[3:5], "big")
        assert source >> 6 == 1 and source & 63 >= 1
    finally:
        port.close()


def test_stx_frames_with_ack_and_nak(controller: tuple[Path, Host]) -> None:
    home, host = controller
    port = Port(home / "lines" / "stx2")
    try:
        connect(port)
        request = bytes.fromhex("6000030000") + BODY
        damaged = bytearray(stx(request))
        damaged[-1] ^= 0x55
        port.write(bytes(damaged))
        assert port.read_exactly(1) == b"\x15"  # NAK
        port.write(stx(request))
        assert port.read_exactly(1) == b"\x06"  # ACK
        expected = stx(bytes.fromhex("6000000003") + BODY + b"!")
        assert port.read_exactly(len(expected)) == expected
        port.write(b"\x06")
        source = host.received[-1][3:5]
        assert int.from_bytes(source, "big") >> 6 == 2  # line 2 in the top ten bits
    finally:
        port.close()


def test_a_routing_miss_drops_the_line_and_status_counts_it(
    controller: tuple[Path, Host],
) -> None:
    home, _ = controller
    port = Port(home / "lines" / "cup1")
    try:
        connect(port)
        request = bytes.fromhex("6000090000") + BODY
        port.write(len(request).to_bytes(2, "big") + request)
        assert port.read_until(b"<hung up>") == b"<hung up>"
    finally:
        port.close()
    done = subprocess.run(
        [MEDSWITCH, "nac", "status", "--table", "nac.toml", "--json"],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert '"0009": 1' in done.stdout
    assert '"routing_miss": 1' in done.stdout

"""pcscd with Debian's vsmartcard-vpcd driver for the PC/SC tests: the ``pcscd`` fixture
(skips without pcscd, the vpcd driver or pyscard — fails instead under CI=true unless
MEDSWITCH_PCSC_UNAVAILABLE says why), and in-process cards put into the virtual readers."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.card import VirtualCard
from simulators.keycard import VirtualKeyCard
from simulators.psam import VirtualPsam
from simulators.vpcd import VPCD_PORT, VpcdClient
from switch.card_io.connection import CardConnectionError, PcscConnection, pcsc_readers

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
CARD_READER = "Virtual PCD 00 00"
PSAM_READER = "Virtual PCD 00 01"
WAIT_S = 10.0
LOCK_FILE = Path("/tmp/medswitch-pcsc-tests.lock")
LOCK_WAIT_S = 180.0


def _missing() -> str | None:
    if shutil.which("pcscd") is None:
        return "pcscd is not installed (apt-get install pcscd)"
    if not VPCD_DRIVER.exists():
        return "the vpcd driver is not installed (apt-get install vsmartcard-vpcd)"
    if importlib.util.find_spec("smartcard") is None:
        return "pyscard is not installed (pip install '.[pcsc]', needs swig, libpcsclite-dev)"
    return None


def _listening(port: int) -> bool:
    """Whether something listens on the port, read from /proc: connecting to probe would
    itself count as a card put into the vpcd slot."""
    wanted = f":{port:04X}"
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted) and fields[3] == "0A":  # 0A: LISTEN
                return True
    return False


@pytest.fixture(scope="module")
def pcscd() -> Iterator[None]:
    missing = _missing()
    if missing is not None:
        unavailable = os.environ.get("MEDSWITCH_PCSC_UNAVAILABLE")
        if os.environ.get("CI") == "true" and not unavailable:
            pytest.fail(f"CI=true and the PC/SC stack is missing: {missing}")
        pytest.skip(f"{missing}" + (f" ({unavailable})" if unavailable else ""))
    with _exclusive():
        yield from _running_pcscd()


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One PC/SC test run at a time on this machine: pcscd's socket and the vpcd ports are
    machine-wide, and developers' test runs share the machine (CI runs alone)."""
    with LOCK_FILE.open("a") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("another test run holds the PC/SC stack (pcscd, vpcd ports)")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _running_pcscd() -> Iterator[None]:
    process = None
    if not _listening(VPCD_PORT):
        process = subprocess.Popen(
            ["pcscd", "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while not _listening(VPCD_PORT) and time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                pytest.fail(f"pcscd exited with {process.returncode}")
            time.sleep(0.1)
        assert _listening(VPCD_PORT), "pcscd did not open the vpcd port"
        while time.monotonic() < deadline:  # the readers come before pcscd's client socket
            try:
                if CARD_READER in pcsc_readers():
                    break
            except CardConnectionError:
                pass
            time.sleep(0.1)
        yield
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def settle(card: VirtualCard | VirtualPsam | VirtualKeyCard) -> None:
    """Wait out pcscd's handling of a fresh insertion: it powers the card to read the ATR and,
    nobody having connected, powers it down after a grace period. A connection made at that
    very moment can see the card powered down under it (the next APDU then finds a card
    with no session), so connect only once the card is down again (bounded)."""
    deadline = time.monotonic() + 1.0
    while not card.powered and time.monotonic() < deadline:
        time.sleep(0.02)
    deadline = time.monotonic() + 2.0
    while card.powered and time.monotonic() < deadline:
        time.sleep(0.02)


def inserted(
    card: VirtualCard | VirtualPsam | VirtualKeyCard, port: int, reader: str
) -> tuple[VpcdClient, PcscConnection]:
    client = VpcdClient(card, port=port)
    client.start()
    assert client.connected.wait(WAIT_S), "the vpcd client did not connect"
    settle(card)
    conn = PcscConnection(reader)
    deadline = time.monotonic() + WAIT_S
    while True:  # pcscd polls the slot; the card shows up within a moment
        try:
            atr = conn.connect()
            break
        except CardConnectionError:
            if time.monotonic() > deadline:
                client.stop()
                raise
            time.sleep(0.2)
    assert atr == card.atr
    return client, conn


def reconnect(
    client: VpcdClient, card: VirtualCard | VirtualPsam | VirtualKeyCard, reader: str
) -> PcscConnection:
    """After a hang-up the client comes back by itself: wait for it and the reader."""
    deadline = time.monotonic() + WAIT_S
    while not client.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    settle(card)
    conn = PcscConnection(reader)
    while True:
        try:
            assert conn.connect() == card.atr
            return conn
        except CardConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

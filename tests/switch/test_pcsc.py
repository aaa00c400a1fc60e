"""The real PC/SC path: pcscd with Debian's vsmartcard-vpcd driver, the virtual card in
"Virtual PCD 00 00" and the PSAM in "Virtual PCD 00 01" through the vpcd client, and pyscard
reaching them as it would real cards. Personalisation, a load and a purchase go over it with
the HSM verifying MAC1/MAC2/TAC.

The test starts pcscd (unless one already listens for vpcd, which it then leaves alone) and the
vpcd clients, and stops what it started. Without pcscd, the vpcd driver or pyscard it skips
with the reason; under CI=true it fails instead, unless .ci/run reported that installing them
failed (MEDSWITCH_PCSC_UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsm import pboc
from hsm.interface import OnlineTxn, PurchaseRecord
from hsm.keys import CardKeyPath
from hsm.pboc import card_factor
from messages.card_records import Visit, append_visit_command
from simulators import pos_records, terminal_card
from simulators.card import Tear, VirtualCard
from simulators.card.factory import blank_card, blank_psam
from simulators.pos import Pos
from simulators.psam import VirtualPsam
from simulators.vpcd import VPCD_PORT, VpcdClient
from switch.card_io import personalize as perso
from switch.card_io.connection import (
    CardConnectionError,
    CardRemovedError,
    PcscConnection,
    expect,
    pcsc_readers,
)
from switch.cli import main
from switch.demo.keys import custodian_files, provision
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.card_book import (
    blank_book_card,
    book_keys,
    personalise_book_card,
    psams_of_three_institutions,
)
from tests.support.card_issuance import load_checked, make_db
from tests.support.daemon import Daemon, now
from tests.support.daemon import run as run_daemon
from tests.support.issuer import (
    CARD_SERIAL,
    PSAM_SERIAL,
    TERMINAL_ID,
    load,
    make_issuer,
    purchase,
)
from tests.support.kiosk import PIN, issue_psam
from tests.support.on_file import first_card
from tests.support.scripted_day import terminal_link
from tests.support.settlement import his_submit, medical_reference

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


def settle(card: VirtualCard | VirtualPsam) -> None:
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
    card: VirtualCard | VirtualPsam, port: int, reader: str
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
    client: VpcdClient, card: VirtualCard | VirtualPsam, reader: str
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


def test_readers_listed(pcscd: None) -> None:
    assert {CARD_READER, PSAM_READER} <= set(pcsc_readers())


def test_personalise_load_and_purchase_over_pcsc(pcscd: None, tmp_path: Path) -> None:
    when = datetime(2026, 11, 25, 16, 0, 0)

    async def body() -> None:
        issuer = await make_issuer()
        card = VirtualCard(issuer.blank_card(), path=tmp_path / "card.json")
        psam = VirtualPsam(issuer.blank_psam(), path=tmp_path / "psam.json")
        card_client, conn = inserted(card, VPCD_PORT, CARD_READER)
        psam_client, sam = inserted(psam, VPCD_PORT + 1, PSAM_READER)
        try:
            assert conn.reader_name == CARD_READER
            await perso.personalize_card(
                conn, issuer.hsm, issuer.keys, CARD_SERIAL, bytes(30), bytes(39), bytes(60),
                issuer.pin("123456"),
            )
            await perso.personalize_psam(
                sam, issuer.hsm, issuer.transport, issuer.keys.purchase, PSAM_SERIAL,
                TERMINAL_ID, 1,
            )
            expect(conn, perso.SELECT_APP, "SELECT")
            assert (await load(conn, issuer, 2, 100_00, when))[0] == 100_00
            record = await purchase(conn, sam, issuer, 2, 25_50, when)
            assert record.terminal_id == TERMINAL_ID
            data = expect(conn, bytes.fromhex("805C000204"), "GET BALANCE")
            assert int.from_bytes(data, "big") == 100_00 - 25_50
            assert card_client.commands > 20

            # A card torn after its balance update leaves the reader mid-command; put back,
            # it proves the load with GET TRANSACTION PROVE and the HSM checks the TAC.
            head = bytes.fromhex("805000020B01000001F4") + TERMINAL_ID + b"\x10"
            init = expect(conn, head, "INIT LOAD")
            txn = OnlineTxn(2, 74_50, 500, int.from_bytes(init[4:6], "big"), init[8:12],
                            TERMINAL_ID, init[12:16])
            keys = issuer.keys
            mac2 = await issuer.hsm.generate_mac2(keys.path(keys.load, CARD_SERIAL), txn, when)
            card.tear_next(Tear.AFTER_UPDATE)
            credit = bytes.fromhex("805200000B") + pboc.bcd_datetime(when) + mac2 + b"\x04"
            with pytest.raises(CardRemovedError):
                conn.transmit(credit)
            conn.disconnect()
            conn = reconnect(card_client, card, CARD_READER)
            expect(conn, perso.SELECT_APP, "SELECT")
            proof = expect(conn, b"\x80\x5a\x00\x02\x02" + init[4:6] + b"\x08", "PROVE")
            assert proof[:4] == mac2
            tac_path = keys.path(keys.tac, CARD_SERIAL)
            assert await issuer.hsm.verify_load_tac(tac_path, txn, 79_50, when, proof[4:])
        finally:
            conn.disconnect()
            sam.disconnect()
            card_client.stop()
            psam_client.stop()

    asyncio.run(body())


def test_cli_personalises_over_pcsc_then_load_and_purchase(pcscd: None, tmp_path: Path) -> None:
    """Must show: a card and a PSAM personalised through the CLI over pcscd + vpcd + pyscard,
    then a load and a purchase whose MAC1/MAC2/TAC the HSM verifies."""
    home, db = tmp_path / "home", tmp_path / "medswitch.db"
    asyncio.run(provision(home, []))
    make_db(db, 1)
    lmk = [a for f in custodian_files(home) for a in ("-c", str(f))]
    runner = CliRunner()

    def run(*args: str) -> None:
        result = runner.invoke(main, [*args[:1], "--home", str(home), *args[1:]])
        assert result.exit_code == 0, result.output

    run("keys", "--operator", "alice", "generate", "cards/file", "--usage", "FILE", *lmk)
    common = ["--db", str(db), *lmk]
    run("cards", *common, "--operator", "alice", "factory-keys")
    run("cards", *common, "--operator", "alice", "issue", "--out", str(tmp_path), "--now",
        "2026-11-25T10:00:00")
    (batch,) = tmp_path.glob("cards-*.bat")
    run("cards", *common, "--operator", "bob", "approve", str(batch))

    card_serial = bytes.fromhex("3101000000000001").rjust(10, b"\0")
    psam_serial = bytes.fromhex("31010000000000000777")
    card = VirtualCard(blank_card(card_serial), path=tmp_path / "card.json")
    psam = VirtualPsam(blank_psam(psam_serial), path=tmp_path / "psam.json")
    card_client, conn = inserted(card, VPCD_PORT, CARD_READER)
    psam_client, sam = inserted(psam, VPCD_PORT + 1, PSAM_READER)
    conn.disconnect()
    sam.disconnect()
    try:
        run("cards", *common, "--operator", "carol", "personalize", str(batch),
            "--reader", CARD_READER, "--reader", PSAM_READER)
        run("psams", *common, "--operator", "carol", "personalize", "--reader", PSAM_READER,
            "--serial", psam_serial.hex(), "--terminal-no", "000012345678",
            "--institution", "hosp1", "--terminal", "00000001")
        conn, sam = reconnect(card_client, card, CARD_READER), reconnect(
            psam_client, psam, PSAM_READER)
        asyncio.run(load_checked(home, conn, card_serial, connect=False))
        asyncio.run(purchase_checked(home, conn, sam, card_serial))
    finally:
        conn.disconnect()
        sam.disconnect()
        card_client.stop()
        psam_client.stop()


async def purchase_checked(
    home: Path, card: PcscConnection, psam: PcscConnection, serial: bytes
) -> None:
    """An offline purchase: card INITIALIZE, PSAM MAC1, card DEBIT, PSAM checks MAC2; the HSM
    of the key home then verifies the TAC and MAC2 as the centre does at upload."""
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))
    keys = Home(home, "test")
    factor = (card_factor(serial),)
    tac_key = CardKeyPath(await resolve(keys, "card/MK_TAC"), factor)
    purchase_key = CardKeyPath(await resolve(keys, "card/MK_PURCHASE"), factor)
    when = datetime(2026, 11, 25, 11, 5, 0)
    terminal_id = expect(psam, bytes.fromhex("00B0960006"), "READ PSAM 0016")
    expect(card, perso.SELECT_APP, "SELECT")
    init = expect(card, bytes.fromhex("805001020B0100000064") + terminal_id + b"\x0f", "INIT")
    ctr, kv, alg, rnd = init[4:6], init[9], init[10], init[11:15]
    data = (rnd + ctr + (100).to_bytes(4, "big") + b"\x06" + pboc.bcd_datetime(when)
            + bytes([kv, alg]) + card_factor(serial))
    out = expect(psam, bytes([0x80, 0x70, 0x00, 0x00, len(data)]) + data + b"\x08", "MAC1")
    debit = b"\x80\x54\x01\x00\x0f" + out[:4] + pboc.bcd_datetime(when) + out[4:] + b"\x08"
    tac_mac2 = expect(card, debit, "DEBIT")
    expect(psam, b"\x80\x72\x00\x00\x04" + tac_mac2[4:], "PSAM MAC2")
    record = PurchaseRecord(6, 100, terminal_id, int.from_bytes(out[:4], "big"), when)
    assert await hsm.verify_purchase_tac(tac_key, record, tac_mac2[:4])
    assert await hsm.verify_purchase_mac2(
        purchase_key, record, rnd, int.from_bytes(ctr, "big"), tac_mac2[4:]
    )
    balance = expect(card, bytes.fromhex("805C000204"), "BALANCE")
    assert int.from_bytes(balance, "big") == 256 - 100


def test_record_book_over_pcsc(pcscd: None, tmp_path: Path) -> None:
    """Issue 24 over the real PC/SC path (pcscd + vpcd + pyscard): a card personalised with its
    record key through the daemon's HSM; a settlement at a hospital's POS leaves the visit on
    it (the centre's script); a forged write is refused 6988; a second hospital's reader shows
    the visit after the cardholder's PIN."""

    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        on_file, rows = first_card(db), psams_of_three_institutions(db)
        at = rows[0].institution_id
        token = await asyncio.to_thread(medical_reference, daemon, at)
        body = {"his_bill_no": "PCSC-1", "card_no": on_file.card_no,
                "service_date": now().date().isoformat(),
                "lines": [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]}
        bill = await asyncio.to_thread(his_submit, daemon.app.http_port, at, token, body)
        bundle = await book_keys(daemon)
        card = blank_book_card(bundle, on_file)
        client, conn = inserted(card, VPCD_PORT, CARD_READER)
        try:
            await personalise_book_card(daemon, conn, bundle, on_file)
            psam = await issue_psam(daemon, rows[0], bundle.keys.purchase)
            link = await terminal_link(daemon, rows[0].terminal_id, at, tmp_path / "pos.json",
                                       daemon.app.terminal_port, 5.0)
            pos = Pos(link, conn, psam, pan=on_file.card_no, pin=PIN)
            try:
                await pos.sign_on()
                lines = await pos.settle(bill["bill_id"], bill["split"]["total_fen"],
                                         personal="cash", visit=("IM", ("J45.9",)))
            finally:
                await link.close()
            assert "  visit recorded on the card" in lines, lines
            terminal_card.open_application(conn, PIN)
            assert len(expect(conn, bytes.fromhex("0084000004"), "GET CHALLENGE")) == 4
            forged = append_visit_command(Visit(f"{now():%Y%m%d}", at, "IM", (), "00" * 8,
                                                1, 0, 0, 1)) + bytes(4)
            assert conn.transmit(forged)[1] == 0x6988
            conn.disconnect()
            conn = reconnect(client, card, CARD_READER)  # the next hospital's reader
            terminal_card.open_application(conn, PIN)
            visits = pos_records.recent_visits(conn)
            assert [(v.institution_id, v.bill_id, v.diagnoses) for v in visits] == [
                (at, bill["bill_id"], ("J45.9",))
            ]
        finally:
            conn.disconnect()
            client.stop()

    run_daemon(tmp_path, scenario)

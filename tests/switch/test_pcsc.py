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
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsm import pboc
from hsm.des import kcv
from hsm.interface import OnlineTxn, PurchaseRecord
from hsm.keys import CardKeyPath
from hsm.lmk import Component, combine
from hsm.pboc import card_factor
from simulators.card import Tear, VirtualCard
from simulators.card.factory import blank_card, blank_psam
from simulators.keycard import KeyCardState, VirtualKeyCard
from simulators.psam import VirtualPsam
from simulators.vpcd import VPCD_PORT
from switch.card_io import personalize as perso
from switch.card_io.connection import (
    CardRemovedError,
    PcscConnection,
    expect,
    pcsc_readers,
)
from switch.cli import main
from switch.demo.keys import custodian_files, provision
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.card_issuance import load_checked, make_db
from tests.support.daemon import make_database
from tests.support.issuer import (
    CARD_SERIAL,
    PSAM_SERIAL,
    TERMINAL_ID,
    load,
    make_issuer,
    purchase,
)
from tests.support.operators import NamedOperators
from tests.support.pcsc import (
    CARD_READER,
    PSAM_READER,
    inserted,
    reconnect,
)
from tests.support.serve import serving


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

    operators = NamedOperators(db, tmp_path / "operator-tokens")

    def run(*args: str) -> None:
        """As the operator ``--operator NAME`` names (enrolled on first use)."""
        result = runner.invoke(main, [*args[:1], "--home", str(home), *args[1:]],
                               env=operators.env(args))
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


def test_custodian_key_cards_over_pcsc(pcscd: None, tmp_path: Path) -> None:
    """Issue 19 item 6 through the real PC/SC stack: two custodians' key cards in the two vpcd
    readers get their PINs and LMK components at the ceremony; the LMK is formed reading both
    through pyscard after each PIN; a wrong PIN counts down."""
    home = tmp_path / "home"
    cards = [VirtualKeyCard(KeyCardState.new(), path=tmp_path / f"{who}.keycard.json")
             for who in ("alice", "bob")]
    clients = []
    try:
        for card, port, reader in ((cards[0], VPCD_PORT, CARD_READER),
                                   (cards[1], VPCD_PORT + 1, PSAM_READER)):
            client, conn = inserted(card, port, reader)
            conn.disconnect()
            clients.append(client)
        runner = CliRunner()

        def keys(*args: str, typed: str, ok: bool = True) -> str:
            result = runner.invoke(main, ["keys", "--home", str(home), *args], input=typed)
            assert (result.exit_code == 0) is ok, result.output
            return result.output

        for reader, who, pin in ((CARD_READER, "alice", "1357"), (PSAM_READER, "bob", "8642")):
            keys("key-card", "init", "--reader", reader, "--custodian", who,
                 typed=f"{pin}\n{pin}\n")
            keys("component", "--custodian", who, "--key-card", reader, typed=f"{pin}\n")
        sources = ["-c", f"key-card:{CARD_READER}", "-c", f"key-card:{PSAM_READER}"]
        out = keys("lmk-form", "--new", *sources, typed="1357\n8642\n")
        clear = [Component(c.state.slots[1].value) for c in cards]
        assert f"LMK KCV {kcv(combine(clear, minimum=2))}" in out
        out = keys("lmk-form", *sources, typed="1111\n", ok=False)
        assert "wrong PIN: 2 tries left" in out
        keys("generate", "zmk/bank1", "--usage", "ZMK", *sources, typed="1357\n8642\n")

        # The daemon reads the LMK's components from the same cards at start, each PIN once.
        make_database(home / "medswitch.db", {"P0000001": "pos"})
        readers = ", ".join(f'"key-card:{r}"' for r in (CARD_READER, PSAM_READER))
        (home / "medswitch.toml").write_text(
            f"[terminal]\nport = 0\n[http]\nport = 0\n[hsm]\nlmk_components = [{readers}]\n")
        with serving(home, typed="1357\n8642\n") as (daemon, ports):
            assert ports.before == tuple(
                f"component read from the key card in {r}, KCV {c.kcv}"
                for r, c in zip((CARD_READER, PSAM_READER), clear, strict=True))
            assert daemon.poll() is None and ports.terminal > 0
    finally:
        for client in clients:
            client.stop()

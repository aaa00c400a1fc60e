"""A card and a PSAM personalised with a SoftHsm's keys (generated in the test), then a load
whose MAC1/MAC2/TAC the HSM checks and purchases whose MAC1 and MAC2 the PSAM makes and checks
and whose TAC the HSM verifies; and the card lifecycle through the HSM's cryptograms."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from simulators.card import VirtualCard
from simulators.psam import VirtualPsam
from switch.card_io import personalize as perso
from switch.card_io.connection import DirectConnection, expect
from tests.support.issuer import (
    CARD_SERIAL,
    PSAM_SERIAL,
    TERMINAL_ID,
    Issuer,
    load,
    make_issuer,
    purchase,
)

PUBLIC = bytes.fromhex("3101000000000000") + b"\x03\x01" + CARD_SERIAL + bytes.fromhex(
    "20261101" "20361031" "0000"
)
HOLDER = b"\x01\x00" + "张三".encode("gbk").ljust(20, b"\x00") + b"110101199001011234".ljust(
    16, b"\x00"
)[:16] + b"\x00"
AUTH = bytes(range(60))
WHEN = datetime(2026, 11, 25, 14, 30, 5)


async def personalised(tmp_path: Path) -> tuple[Issuer, VirtualCard, VirtualPsam]:
    issuer = await make_issuer()
    card = VirtualCard(issuer.blank_card(), path=tmp_path / "card.json")
    psam = VirtualPsam(issuer.blank_psam(), path=tmp_path / "psam.json")
    conn = DirectConnection(card)
    conn.connect()
    await perso.personalize_card(
        conn, issuer.hsm, issuer.keys, CARD_SERIAL, PUBLIC, HOLDER, AUTH, issuer.pin("123456")
    )
    sam = DirectConnection(psam)
    sam.connect()
    await perso.personalize_psam(
        sam, issuer.hsm, issuer.transport, issuer.keys.purchase, PSAM_SERIAL, TERMINAL_ID, 1
    )
    return issuer, card, psam


def test_personalise_load_and_purchase(tmp_path: Path) -> None:
    async def body() -> None:
        issuer, card, psam = await personalised(tmp_path)
        conn, sam = DirectConnection(card), DirectConnection(psam)
        conn.connect()
        sam.connect()
        expect(conn, perso.SELECT_APP, "SELECT")
        assert expect(conn, bytes.fromhex("00B0950000"), "READ 0015") == PUBLIC
        assert expect(conn, bytes.fromhex("00B0960000"), "READ 0016") == HOLDER
        auth = expect(conn, bytes.fromhex("00B0970000"), "READ 0017")
        keys = issuer.keys
        code_path = keys.path(keys.data_check, CARD_SERIAL)
        assert auth[:60] == AUTH
        assert await issuer.hsm.verify_card_data_check_code(code_path, HOLDER + AUTH, auth[60:])

        assert await load(conn, issuer, 2, 50_00, WHEN) == (50_00, card.state.proofs[2].tac)
        expect(conn, bytes.fromhex("0020000003123456"), "VERIFY")
        balance, _ = await load(conn, issuer, 1, 300_00, WHEN)
        assert balance == 300_00
        await purchase(conn, sam, issuer, 2, 12_34, WHEN)
        record = await purchase(conn, sam, issuer, 1, 100_00, WHEN)
        assert record.term_serial == 2 and record.terminal_id == TERMINAL_ID
        assert expect(conn, bytes.fromhex("805C000204"), "BALANCE EP") == (50_00 - 12_34).to_bytes(
            4, "big"
        )
        ed = expect(conn, bytes.fromhex("805C000104"), "BALANCE ED")
        assert ed == (200_00).to_bytes(4, "big")
        # The state survives on disk: a card loaded from its file has the same balances.
        again = VirtualCard.load(tmp_path / "card.json")
        assert again.state == card.state
        assert VirtualPsam.load(tmp_path / "psam.json").state.term_serial == 3

    asyncio.run(body())


def test_lifecycle_pin_block_and_authorisation(tmp_path: Path) -> None:
    async def body() -> None:
        issuer, card, _ = await personalised(tmp_path)
        conn = DirectConnection(card)
        conn.connect()
        expect(conn, perso.SELECT_APP, "SELECT")
        for left in (2, 1):
            assert conn.transmit(bytes.fromhex("0020000003999999")) == (b"", 0x63C0 | left)
        assert conn.transmit(bytes.fromhex("0020000003999999"))[1] == 0x6983
        assert conn.transmit(bytes.fromhex("0020000003123456"))[1] == 0x6983  # blocked
        # PIN reload at a bank counter: the HSM's MAC over the new PIN from its PIN block.
        new_pin = issuer.pin("654321")
        await perso.reload_pin(
            conn, issuer.hsm, issuer.keys, CARD_SERIAL, new_pin, bytes.fromhex("654321")
        )
        expect(conn, bytes.fromhex("0020000003654321"), "VERIFY")
        # A tampered reload is refused.
        mac_ok = conn.transmit(bytes.fromhex("805E000007") + bytes.fromhex("111111") + bytes(4))
        assert mac_ok[1] == 0x9302
        # PIN unblock: enciphered under the DPUK by the HSM.
        await perso.unblock_pin(conn, issuer.hsm, issuer.keys, CARD_SERIAL, issuer.pin("2468"))
        expect(conn, bytes.fromhex("00200000022468"), "VERIFY")

        await perso.application_block(conn, issuer.hsm, issuer.keys, CARD_SERIAL, permanent=False)
        assert conn.transmit(bytes.fromhex("805C000204"))[1] == 0x6A81
        assert conn.transmit(perso.SELECT_APP)[1] == 0x6A81
        await perso.application_unblock(conn, issuer.hsm, issuer.keys, CARD_SERIAL)
        assert conn.transmit(bytes.fromhex("805C000204")) == (bytes(4), 0x9000)

        new_auth = bytes([0xA5]) * 60
        code = await perso.write_authorisation(conn, issuer.hsm, issuer.keys, CARD_SERIAL, new_auth)
        assert expect(conn, bytes.fromhex("00B0970000"), "READ 0017") == new_auth + code
        code_path = issuer.keys.path(issuer.keys.data_check, CARD_SERIAL)
        assert await issuer.hsm.verify_card_data_check_code(code_path, HOLDER + new_auth, code)

        await perso.application_block(conn, issuer.hsm, issuer.keys, CARD_SERIAL, permanent=True)
        assert conn.transmit(perso.SELECT_APP)[1] == 0x9303
        assert conn.transmit(bytes.fromhex("805C000204"))[1] == 0x9303

    asyncio.run(body())

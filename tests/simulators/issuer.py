"""An issuer for the card tests: a SoftHsm with freshly generated card master keys (only the
chip maker's control and PSAM transport masters, and the test PIK, are formed from known test
components, since a blank card or PSAM must be made with its diversified key), plus a
terminal's load and purchase flows over any card connection, checked by the HSM."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from hsm import pboc, pinblock
from hsm.des import Des, adjust_parity, kcv
from hsm.interface import OnlineTxn, PurchaseRecord
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from simulators.card import CardState
from simulators.psam import PsamState
from switch.card_connection import CardConnection, expect
from switch.card_personalize import KEY_INDEX, CardMasterKeys, PinEntry

U = KeyUsage
NOW = datetime(2026, 11, 25, 9, 30, 0)
PAN = "6210981234567890127"
CARD_SERIAL = bytes.fromhex("3101") + bytes.fromhex("0000000000012345")
PSAM_SERIAL = bytes.fromhex("3101") + bytes.fromhex("0000000000000777")
TERMINAL_ID = bytes.fromhex("000012345678")


@dataclass
class Issuer:
    hsm: SoftHsm
    keys: CardMasterKeys
    transport: KeyRef
    pik: KeyRef
    _control: bytes
    _transport: bytes
    _pik: bytes

    def blank_card(self, serial: bytes = CARD_SERIAL) -> CardState:
        """What the chip maker delivers: structure and the diversified control key."""
        control = pboc.diversify(Des(self._control), pboc.card_factor(serial))
        return CardState.blank(serial, control)

    def blank_psam(self, serial: bytes = PSAM_SERIAL, term_serial: int = 1) -> PsamState:
        transport = pboc.diversify(Des(self._transport), pboc.card_factor(serial))
        return PsamState.blank(serial, transport, term_serial=term_serial)

    def pin(self, pin: str) -> PinEntry:
        """The PIN as a PIN pad sends it: format 0 under the PIK."""
        block = Des(self._pik).encrypt_ecb(pinblock.encode_format0(pin, PAN))
        return PinEntry(self.pik, block, PAN)


async def make_issuer() -> Issuer:
    a, b = Component(secrets.token_bytes(16)), Component(secrets.token_bytes(16))
    hsm = SoftHsm(Lmk([a, b], kcv(combine([a, b]))), MemoryKeyStore())
    clear = {name: adjust_parity(secrets.token_bytes(16)) for name in ("control", "transport")}
    clear["pik"] = adjust_parity(secrets.token_bytes(16))

    async def formed(alias: str, usage: KeyUsage, value: bytes) -> KeyRef:
        return await hsm.form_key(alias, usage, [Component(value)], now=NOW)

    async def generated(alias: str, usage: KeyUsage) -> KeyRef:
        return await hsm.generate_key(alias, usage, now=NOW)

    keys = CardMasterKeys(
        control=await formed("card/control", U.MK_CONTROL, clear["control"]),
        load=await generated("card/load", U.MK_LOAD),
        purchase=await generated("card/purchase", U.MK_PURCHASE),
        tac=await generated("card/tac", U.MK_TAC),
        unload=await generated("card/unload", U.MK_UNLOAD),
        pin_reload=await generated("card/reload", U.MK_PIN_RELOAD),
        pin_unblock=await generated("card/unblock", U.MK_PIN_UNBLOCK),
        app_maint=await generated("card/maint", U.MK_APP_MAINT),
        data_check=await generated("card/datacheck", U.DATA_CHECK),
    )
    transport = await formed("psam/transport", U.PSAM_TRANSPORT, clear["transport"])
    pik = await formed("term/pik", U.PIK, clear["pik"])
    return Issuer(hsm, keys, transport, pik, clear["control"], clear["transport"], clear["pik"])


async def load(
    conn: CardConnection, issuer: Issuer, purse: int, amount: int, when: datetime
) -> tuple[int, bytes]:
    """INITIALIZE FOR LOAD → HSM MAC1/MAC2 → CREDIT FOR LOAD → HSM checks the TAC.
    Returns (new balance, TAC)."""
    head = bytes([0x80, 0x50, 0x00, purse, 0x0B, KEY_INDEX])
    init = expect(conn, head + amount.to_bytes(4, "big") + TERMINAL_ID + b"\x10", "INIT LOAD")
    txn = OnlineTxn(
        txn_type=purse,
        old_balance_fen=int.from_bytes(init[:4], "big"),
        amount_fen=amount,
        online_ctr=int.from_bytes(init[4:6], "big"),
        rnd=init[8:12],
        terminal_id=TERMINAL_ID,
        mac1=init[12:16],
    )
    serial = CARD_SERIAL
    keys = issuer.keys
    assert await issuer.hsm.verify_mac1(keys.path(keys.load, serial), txn)
    mac2 = await issuer.hsm.generate_mac2(keys.path(keys.load, serial), txn, when)
    tac = expect(conn, b"\x80\x52\x00\x00\x0b" + pboc.bcd_datetime(when) + mac2 + b"\x04", "CREDIT")
    new_balance = txn.old_balance_fen + amount
    tac_path = keys.path(keys.tac, serial)
    assert await issuer.hsm.verify_load_tac(tac_path, txn, new_balance, when, tac)
    return new_balance, tac


async def purchase(
    card: CardConnection,
    psam: CardConnection,
    issuer: Issuer,
    purse: int,
    amount: int,
    when: datetime,
) -> PurchaseRecord:
    """The offline purchase a POS makes: card INITIALIZE, PSAM MAC1, card DEBIT, PSAM checks
    MAC2; then the HSM verifies the TAC as the centre does at upload."""
    terminal_id = expect(psam, bytes.fromhex("00B0960006"), "READ PSAM 0016")
    head = bytes([0x80, 0x50, 0x01, purse, 0x0B, KEY_INDEX])
    init = expect(card, head + amount.to_bytes(4, "big") + terminal_id + b"\x0f", "INIT PURCHASE")
    ctr, kv, alg, rnd = init[4:6], init[9], init[10], init[11:15]
    txn_type = pboc.TYPE_ED_PURCHASE if purse == 1 else pboc.TYPE_EP_PURCHASE
    data = (
        rnd + ctr + amount.to_bytes(4, "big") + bytes([txn_type]) + pboc.bcd_datetime(when)
        + bytes([kv, alg]) + pboc.card_factor(CARD_SERIAL)
    )
    out = expect(psam, bytes([0x80, 0x70, 0x00, 0x00, len(data)]) + data + b"\x08", "PSAM MAC1")
    term_serial, mac1 = out[:4], out[4:8]
    debit = b"\x80\x54\x01\x00\x0f" + term_serial + pboc.bcd_datetime(when) + mac1 + b"\x08"
    tac_mac2 = expect(card, debit, "DEBIT")
    expect(psam, b"\x80\x72\x00\x00\x04" + tac_mac2[4:], "PSAM MAC2")
    record = PurchaseRecord(
        txn_type, amount, terminal_id, int.from_bytes(term_serial, "big"), when
    )
    keys = issuer.keys
    tac_path = keys.path(keys.tac, CARD_SERIAL)
    assert await issuer.hsm.verify_purchase_tac(tac_path, record, tac_mac2[:4])
    assert await issuer.hsm.verify_purchase_mac2(
        keys.path(keys.purchase, CARD_SERIAL), record, rnd, int.from_bytes(ctr, "big"),
        tac_mac2[4:],
    )
    return record

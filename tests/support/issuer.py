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
from hsm.interface import PurchaseRecord
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm
from simulators.card import CardState, terminal
from simulators.psam import PsamState
from switch.card_io.connection import CardConnection
from switch.card_io.personalize import CardMasterKeys, PinEntry

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
    txn = terminal.initialize_load(conn, purse, amount, TERMINAL_ID).online_txn()
    keys = issuer.keys
    assert await issuer.hsm.verify_mac1(keys.path(keys.load, CARD_SERIAL), txn)
    mac2 = await issuer.hsm.generate_mac2(keys.path(keys.load, CARD_SERIAL), txn, when)
    tac = terminal.credit_for_load(conn, when, mac2)
    new_balance = txn.old_balance_fen + amount
    tac_path = keys.path(keys.tac, CARD_SERIAL)
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
    """The offline purchase a POS makes (card INITIALIZE, PSAM MAC1, card DEBIT, PSAM checks
    MAC2); then the HSM verifies the TAC and MAC2 as the centre does at upload."""
    debit = terminal.offline_purchase(
        card, psam, purse, amount, when, pboc.card_factor(CARD_SERIAL)
    )
    keys = issuer.keys
    tac_path = keys.path(keys.tac, CARD_SERIAL)
    assert await issuer.hsm.verify_purchase_tac(tac_path, debit.record, debit.tac)
    assert await issuer.hsm.verify_purchase_mac2(
        keys.path(keys.purchase, CARD_SERIAL), debit.record, debit.rnd, debit.offline_ctr,
        debit.mac2,
    )
    return debit.record

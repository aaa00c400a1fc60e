"""A kiosk for the daemon tests: a virtual card personalised through the daemon's HSM (keys by
secure messaging, never in clear outside the HSM and the card), and the ED load flow over the
card connection and the terminal interface; a kiosk signed on, the balances the ledger keeps for
a card, and an EP load's outcome given directly."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime

from hsm import pboc, pinblock
from hsm.des import Des, adjust_parity
from hsm.keys import KeyRef, KeyUsage
from hsm.lmk import Component
from ledger import events as ev
from ledger.core import Transfer, new_account, transfer_id
from ledger.kinds import AccountKind, account_id
from ledger.kinds import AccountKind as K
from messages.private import CardData
from messages.terminal import (
    EdLoad,
    EdLoadConfirm,
    SignOn,
    SignOnReply,
    TerminalReply,
)
from routing.cardkeys import card_master_alias
from simulators import terminal_card
from simulators.card import CardState, VirtualCard
from simulators.card.state import PURSE_EP
from simulators.psam import PsamState, VirtualPsam
from switch.card_io.connection import CardConnection, DirectConnection
from switch.card_io.personalize import (
    CardMasterKeys,
    PinEntry,
    personalize_card,
    personalize_psam,
)
from tests.support.daemon import (
    Daemon,
    Terminal,
    now,
)
from tests.support.on_file import CardOnFile, PsamOnFile

U = KeyUsage
SELECT_APP = bytes.fromhex("00A4040006D15600000503")
PIN = "123456"
KIOSK_ID = bytes.fromhex("000000000001")  # the terminal number the card MACs


async def card_master_keys(daemon: Daemon) -> tuple[CardMasterKeys, bytes, KeyRef, bytes]:
    """Key version 1 of every card master key in the daemon's HSM. Only the control master and
    a PIN pad's PIK are formed from clear test values: the chip maker needs the first for blank
    cards, the PIN pad the second."""
    clear_control = adjust_parity(secrets.token_bytes(16))
    clear_pik = adjust_parity(secrets.token_bytes(16))
    hsm = daemon.hsm

    async def generated(usage: KeyUsage) -> KeyRef:
        return await hsm.generate_key(card_master_alias(usage), usage, now=now())

    control = await hsm.form_key(
        card_master_alias(U.MK_CONTROL), U.MK_CONTROL, [Component(clear_control)], now=now()
    )
    keys = CardMasterKeys(
        control=control,
        load=await generated(U.MK_LOAD),
        purchase=await generated(U.MK_PURCHASE),
        tac=await generated(U.MK_TAC),
        unload=await generated(U.MK_UNLOAD),
        pin_reload=await generated(U.MK_PIN_RELOAD),
        pin_unblock=await generated(U.MK_PIN_UNBLOCK),
        app_maint=await generated(U.MK_APP_MAINT),
        data_check=await hsm.generate_key("centre/DATA_CHECK", U.DATA_CHECK, now=now()),
    )
    pik = await hsm.form_key("kiosk/pinpad", U.PIK, [Component(clear_pik)], now=now())
    return keys, clear_control, pik, clear_pik


async def issue_card(daemon: Daemon, on_file: CardOnFile) -> CardConnection:
    connection, _ = await issue_card_with_keys(daemon, on_file)
    return connection


async def issue_card_with_keys(
    daemon: Daemon, on_file: CardOnFile
) -> tuple[CardConnection, CardMasterKeys]:
    keys, clear_control, pik, clear_pik = await card_master_keys(daemon)
    serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
    control = pboc.diversify(Des(clear_control), pboc.card_factor(serial))
    card = VirtualCard(CardState.blank(serial, control))
    conn = DirectConnection(card)
    conn.connect()
    block = Des(clear_pik).encrypt_ecb(pinblock.encode_format0(PIN, on_file.card_no))
    public = bytes(10) + serial + bytes(10)
    await personalize_card(
        conn,
        daemon.hsm,
        keys,
        serial,
        public,
        bytes(39),
        bytes(60),
        PinEntry(pik, block, on_file.card_no),
    )
    return conn, keys


def card_balance(conn: CardConnection) -> int:
    return terminal_card.balance(conn)


async def kiosk_load(
    kiosk: Terminal, conn: CardConnection, on_file: CardOnFile, amount: int, *, confirm: bool = True
) -> tuple[TerminalReply, TerminalReply | None]:
    """VERIFY → INITIALIZE FOR LOAD → 0200 (MAC2) → CREDIT FOR LOAD → 0220 with the TAC."""
    terminal_card.open_application(conn, PIN)
    serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
    data = terminal_card.initialize_load(conn, serial, amount, KIOSK_ID)
    reply = await kiosk.exchange(
        EdLoad(**kiosk.envelope(), pan=on_file.card_no, amount_fen=amount, card=data)
    )
    if reply.response_code != "00":
        if reply.card is not None and reply.card.issuer_script:  # e.g. a lost card's block
            conn.transmit(reply.card.issuer_script)
        return reply, None
    assert reply.card is not None and reply.card.mac2 and reply.card.card_datetime
    tac = terminal_card.credit_for_load(conn, reply.card.card_datetime, reply.card.mac2)
    if not confirm:
        return reply, None
    done = replace(
        data, tac=tac, new_balance_fen=card_balance(conn), card_datetime=reply.card.card_datetime
    )
    confirmation = await kiosk.exchange(
        EdLoadConfirm(**kiosk.envelope(), pan=on_file.card_no, amount_fen=amount, card=done)
    )
    return reply, confirmation


async def issue_psam(daemon: Daemon, on_file: PsamOnFile, purchase: KeyRef) -> CardConnection:
    """A PSAM from the chip maker (its transport key from a known test master), personalised
    with its terminal number and the purchase master key under the transport key."""
    clear_transport = adjust_parity(secrets.token_bytes(16))
    transport = await daemon.hsm.form_key(
        f"psam/transport/{on_file.serial}",
        U.PSAM_TRANSPORT,
        [Component(clear_transport)],
        now=now(),
    )
    serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
    key = pboc.diversify(Des(clear_transport), pboc.card_factor(serial))
    conn = DirectConnection(VirtualPsam(PsamState.blank(serial, key)))
    conn.connect()
    await personalize_psam(
        conn,
        daemon.hsm,
        transport,
        purchase,
        serial,
        bytes.fromhex(on_file.terminal_no),
        purchase.version,
    )
    return conn


def pos_purchase(
    card: CardConnection, psam: CardConnection, on_file: CardOnFile, amount: int, when: datetime
) -> CardData:
    """An ED purchase at a POS with its PSAM; returns the card data a debit advice carries."""
    terminal_card.open_application(card, PIN)
    serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
    return terminal_card.purchase(card, psam, serial, amount, when)

KIOSK = "K0000001"


async def signed_on_kiosk(daemon: Daemon, terminal: Terminal, institution: str = "centre") -> None:
    terminal.institution_id = institution.ljust(15)
    reply = await terminal.exchange(SignOn(**terminal.envelope()), mac=False)
    assert isinstance(reply, SignOnReply) and reply.keys is not None, reply
    terminal.keys = await terminal.hsm.accept_sign_on(
        terminal.tmk, reply.keys.build(), f"pos/{terminal.terminal_id}", now=now()
    )
    terminal.batch = reply.batch


async def balances(daemon: Daemon, serial: str, cardholder: str) -> tuple[int, int, int]:
    ledger = daemon.app.ledger
    assert ledger is not None
    ids = [
        account_id(AccountKind.CARD_ED_SHADOW, serial),
        account_id(AccountKind.ED_LOADS_IN_DOUBT, serial),
        account_id(AccountKind.PERSONAL_FUND, cardholder),
    ]
    found = await ledger.balances(ids)
    return tuple(found[i].balance_fen if i in found else 0 for i in ids)  # type: ignore[return-value]


async def give_ep(daemon: Daemon, card: VirtualCard, serial: str, amount: int) -> None:
    """An EP load's outcome, as a fixture: the card's EP holds ``amount`` and so does its
    shadow (the kiosk's EP load from bank savings is not what this test is about)."""
    card.state.purses[PURSE_EP].balance += amount
    card.save()
    ledger = daemon.app.ledger
    assert ledger is not None
    await ledger.open_accounts([new_account(K.EP_PROOF_CLEARING, ev.CENTRE)])
    await ledger.open_accounts(ev.card_accounts(serial))
    transfer = Transfer(
        transfer_id("test-ep", serial),
        account_id(K.EP_PROOF_CLEARING, ev.CENTRE),
        account_id(K.CARD_EP_SHADOW, serial),
        amount,
        ev.TransferCode.LOAD_TO_SHADOW,
    )
    assert (await ledger.post([transfer]))[0].ok

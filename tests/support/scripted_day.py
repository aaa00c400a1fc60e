"""The scripted day's shape and steps, shared by the day tests and the bank tests: the cards
and PSAMs on file, cards issued under one set of master keys, terminal links with their own
secure module, a forged offline record, and the ledger's sums."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from hsm import pboc, pinblock
from hsm.des import Des, adjust_parity
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component
from messages.private import CardData
from simulators.card import CardState, VirtualCard
from simulators.kiosk import Kiosk
from simulators.pos import Pos
from simulators.terminal_link import Endpoint, TerminalLink, TerminalState
from switch.card_io.connection import CardConnection, DirectConnection
from switch.card_io.personalize import PinEntry, personalize_card
from tests.support.daemon import Daemon, new_hsm, now
from tests.support.kiosk import PIN, card_master_keys
from tests.support.on_file import CardOnFile, PsamOnFile, psams_on_file

CARDS = 50
KIOSKS = ("K0000001", "K0000002")
LOAD_FEN = 6_000  # each card's load: its bill's personal share and the offline purchases fit
OFFLINE_FEN = 300
FORGED_SERIAL = 900_000  # a PSAM transaction serial the POS never reached
FORGED_FEN = 777


def cards_on_file(database: Path, count: int) -> list[CardOnFile]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT card_no, application_serial, cardholder_id FROM cards ORDER BY card_no LIMIT ?",
            (count,),
        ).fetchall()
    assert len(rows) == count
    return [CardOnFile(*row) for row in rows]


def three_psams(database: Path) -> list[PsamOnFile]:
    """Two PSAMs (POS) of the first institution, one of the second."""
    psams = psams_on_file(database)
    first = [p for p in psams if p.institution_id == psams[0].institution_id][:2]
    other = next(p for p in psams if p.institution_id != psams[0].institution_id)
    assert len(first) == 2
    return [*first, other]


async def issue_cards(daemon: Daemon, cards: list[CardOnFile]) -> tuple[list[CardConnection], Any]:
    """Virtual cards personalised through the daemon's HSM under one set of master keys."""
    keys, clear_control, pik, clear_pik = await card_master_keys(daemon)
    connections: list[CardConnection] = []
    for on_file in cards:
        serial = bytes.fromhex(on_file.serial).rjust(10, b"\0")
        control = pboc.diversify(Des(clear_control), pboc.card_factor(serial))
        conn = DirectConnection(VirtualCard(CardState.blank(serial, control)))
        conn.connect()
        block = Des(clear_pik).encrypt_ecb(pinblock.encode_format0(PIN, on_file.card_no))
        entry = PinEntry(pik, block, on_file.card_no)
        public = bytes(10) + serial + bytes(10)
        await personalize_card(conn, daemon.hsm, keys, serial, public, bytes(39), bytes(60), entry)
        connections.append(conn)
    return connections, keys


async def terminal_link(
    daemon: Daemon, terminal_id: str, institution: str, state: Path, port: int, timeout: float
) -> TerminalLink:
    """The terminal's own secure module with the TMK the centre holds as tmk/<terminal id>."""
    clear = adjust_parity(secrets.token_bytes(16))
    await daemon.hsm.form_key(f"tmk/{terminal_id}", KeyUsage.TMK, [Component(clear)], now=now())
    module = new_hsm(MemoryKeyStore())
    tmk = await module.form_key(f"tmk/{terminal_id}", KeyUsage.TMK, [Component(clear)], now=now())
    endpoint = Endpoint("127.0.0.1", port, timeout)
    return TerminalLink(endpoint, terminal_id, institution, module, tmk, TerminalState.open(state))


def present(terminal: Pos | Kiosk, card: CardConnection, on_file: CardOnFile) -> None:
    """The next customer's card in the terminal's reader."""
    terminal.card, terminal.pan = card, on_file.card_no


def forge_record(pos: Pos) -> dict[str, Any]:
    """A test helper: an offline record for a debit the card never made, with a wrong TAC,
    written into the POS's batch (as a tampered terminal would) before its upload."""
    genuine = pos.state.records[-1]
    data = replace(
        CardData.parse(bytes.fromhex(genuine["card"])),
        psam_serial=FORGED_SERIAL,
        amount_fen=FORGED_FEN,
        tac=b"\0\0\0\0",
    )
    forged = {**genuine, "amount_fen": FORGED_FEN, "card": data.build().hex(), "online": False}
    forged.pop("bill_id", None)
    forged["advised"] = False
    pos.state.records.append(forged)
    pos.state.save()
    return forged


async def ledger_sums(daemon: Daemon) -> tuple[tuple[str, int, int], ...]:
    ledger = daemon.app.ledger
    assert ledger is not None
    found = await ledger.all_balances()
    assert sum(b.debits_posted_fen for b in found) == sum(b.credits_posted_fen for b in found)
    return tuple(sorted((b.account_id, b.debits_posted_fen, b.credits_posted_fen) for b in found))

"""EP loads from kiosks while a test breaks the bank link: each kiosk loads 100, 101, … fen
until told to stop (bounded by ``rounds_max``), and the traffic keeps every answer's code and the
fen approved per card — what the outage tests check the bank, cards and ledger against."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple

from simulators.kiosk import Kiosk
from simulators.terminal_link import TerminalError
from switch.card_io.connection import CardConnection
from tests.support.bank import BankDaemon
from tests.support.kiosk import PIN
from tests.support.on_file import CardOnFile
from tests.support.scripted_day import cards_on_file, issue_cards, terminal_link


class Kiosks(NamedTuple):
    cards: list[CardOnFile]
    connections: list[CardConnection]  # each card's reader, in the order of ``cards``
    kiosks: list[Kiosk]  # kiosk i (K000000<i+1>) holds card i


async def kiosks_with_cards(bank: BankDaemon, state_dir: Path, count: int = 2) -> Kiosks:
    """The first ``count`` cards on file issued, each in a kiosk of its own connected to the
    bank daemon's terminal port (not yet signed on)."""
    daemon = bank.daemon
    cards = cards_on_file(bank.database, count)
    connections, _ = await issue_cards(daemon, cards)
    port = daemon.app.terminal_port
    kiosks = []
    for i, (on_file, conn) in enumerate(zip(cards, connections, strict=True)):
        state = state_dir / f"k{i}.json"
        link = await terminal_link(daemon, f"K000000{i + 1}", "centre", state, port, 10.0)
        kiosks.append(Kiosk(link, conn, pan=on_file.card_no, pin=PIN))
    return Kiosks(cards, connections, kiosks)


class KioskTraffic:
    def __init__(self, rounds_max: int) -> None:
        self.rounds_max = rounds_max
        self.approved: dict[str, int] = {}  # card number → fen approved
        self.codes: list[str] = []
        self.stop = asyncio.Event()

    async def run(self, kiosk: Kiosk) -> None:
        for round_no in range(self.rounds_max):
            if self.stop.is_set():
                return
            amount = 100 + round_no
            try:
                await kiosk.ep_load(amount)
            except TerminalError as error:
                self.codes.append(error.code or "no answer")
            else:
                self.codes.append("00")
                self.approved[kiosk.pan] = self.approved.get(kiosk.pan, 0) + amount
            await asyncio.sleep(0.05)

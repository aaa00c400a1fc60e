"""EP loads from kiosks while a test breaks the bank link: each kiosk loads 100, 101, … fen
until told to stop (bounded by ``rounds_max``), and the traffic keeps every answer's code and the
fen approved per card — what the outage tests check the bank, cards and ledger against."""

from __future__ import annotations

import asyncio

from simulators.kiosk import Kiosk
from simulators.terminal_link import TerminalError


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

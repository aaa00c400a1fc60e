"""V4's virtual PSAM: the published card key loaded unchanged, so V4's purchase MAC1 and MAC2
can be checked from the PSAM side."""

from __future__ import annotations

from pathlib import Path

from simulators.psam import PsamKey, PsamState, VirtualPsam
from tests.support.cards import V4_KEY, h

TRANSPORT = bytes.fromhex("778899AABBCCDDEEFF00112233445566")
SERIAL = bytes.fromhex("31010000000000000777")
TERM = "001122334455"


def v4_psam(path: Path | None = None) -> VirtualPsam:
    state = PsamState.blank(SERIAL, TRANSPORT, h(TERM), term_serial=0)
    state.keys[0] = PsamKey(0x02, 0, 0, V4_KEY)  # V4's card key itself: no diversification
    psam = VirtualPsam(state, path=path)
    psam.power_on()
    return psam

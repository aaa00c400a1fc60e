"""The HSM tests' world: the suite's LMK, the published vector keys (and a few for the bank
side), a SoftHsm holding them, and the two backends every HSM test body runs on: SoftHsm in
process and the network client talking to a server on 127.0.0.1 (port 0) that wraps a SoftHsm.
Each test body runs in a fresh event loop with a fresh key store holding the vector keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from hsm.des import kcv
from hsm.interface import Hsm
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.soft import SoftHsm

U = KeyUsage
NOW = datetime(2026, 11, 25, 10, 0, 0)
LMK_A = Component(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
LMK_B = Component(bytes.fromhex("10101010101010102323232323232323"))

# alias → (usage, clear value): the published vector keys plus a few for the bank side.
KNOWN_KEYS: dict[str, tuple[KeyUsage, str]] = {
    "v1/load": (U.MK_LOAD, "11223344556677888877665544332211"),
    "v1/purchase": (U.MK_PURCHASE, "11223344556677888877665544332211"),
    "v4/load": (U.MK_LOAD, "00112233445566778899AABBCCDDEEFF"),
    "v4/purchase": (U.MK_PURCHASE, "00112233445566778899AABBCCDDEEFF"),
    "v4/tac": (U.MK_TAC, "00112233445566778899AABBCCDDEEFF"),
    "v4/unload": (U.MK_UNLOAD, "00112233445566778899AABBCCDDEEFF"),
    "v5/load": (U.MK_LOAD, "00112233445566778899AABBCCDDEEFF"),
    "v7/tmk": (U.TMK, "CA5D92598DCA48CE8A4C76361A9269E9"),
    "v8/mak": (U.MAK, "0723C80DB5F4CD3D0723C80DB5F4CD3D"),
    "term/pik": (U.PIK, "0123456789ABCDEFFEDCBA9876543210"),
    "bank/zpk": (U.ZPK, "89ABCDEF01234567FEDCBA9876543210"),
    "bank/zak": (U.ZAK, "F1E2D3C4B5A69788796A5B4C3D2E1F00"),
    "bank/zmk": (U.ZMK, "E0E0E0E0F1F1F1F11F1F1F1F0E0E0E0E"),
    "bank/file": (U.FILE, "13579BDF02468ACE13579BDF02468ACE"),
    "card/reload": (U.MK_PIN_RELOAD, "2233445566778899AABBCCDDEEFF0011"),
    "card/unblock": (U.MK_PIN_UNBLOCK, "33445566778899AABBCCDDEEFF001122"),
    "card/maint": (U.MK_APP_MAINT, "445566778899AABBCCDDEEFF00112233"),
    "card/control": (U.MK_CONTROL, "5566778899AABBCCDDEEFF0011223344"),
    "card/datacheck": (U.DATA_CHECK, "66778899AABBCCDDEEFF001122334455"),
    "psam/transport": (U.PSAM_TRANSPORT, "778899AABBCCDDEEFF00112233445566"),
}


def clear(alias: str) -> bytes:
    return bytes.fromhex(KNOWN_KEYS[alias][1])


def make_soft_hsm() -> SoftHsm:
    lmk = Lmk([LMK_A, LMK_B], kcv(combine([LMK_A, LMK_B])))
    return SoftHsm(lmk, MemoryKeyStore())


async def load_known_keys(soft: SoftHsm) -> dict[str, KeyRef]:
    refs = {}
    for alias, (usage, value) in KNOWN_KEYS.items():
        refs[alias] = await soft.form_key(alias, usage, [Component(bytes.fromhex(value))], now=NOW)
    return refs


Body = Callable[[Hsm, dict[str, KeyRef]], Awaitable[None]]


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.__dict__))


def secret_texts() -> list[str]:
    """Every clear key (and half key) of the suite, as it could appear in text."""
    values = [v for _, v in KNOWN_KEYS.values()] + [c.reveal().replace(" ", "") for c in
                                                    (LMK_A, LMK_B)]
    return [t for v in values for t in (v, v[:16], v[16:], v.lower()) if t]


@dataclass
class Backend:
    name: str

    def run(self, body: Body) -> None:
        """Run one test body; afterwards no log line of the run may show key material."""
        collector = _Collector()
        root = logging.getLogger()
        root.addHandler(collector)
        level = root.level
        root.setLevel(logging.DEBUG)
        try:
            asyncio.run(self._run(body))
        finally:
            root.removeHandler(collector)
            root.setLevel(level)
        logged = "\n".join(collector.lines)
        for secret in secret_texts():
            assert secret not in logged

    async def _run(self, body: Body) -> None:
        soft = make_soft_hsm()
        refs = await load_known_keys(soft)
        if self.name == "soft":
            await body(soft, refs)
            return
        from switch.hsm_net import HsmClient, HsmServer

        server = HsmServer(soft)
        port = await server.start("127.0.0.1", 0)
        client = await HsmClient.connect("127.0.0.1", port)
        try:
            await body(client, refs)
        finally:
            await client.close()
            await server.stop()

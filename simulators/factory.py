"""The chip maker: blank cards and PSAMs carrying their diversified control / transport key,
from the masters the issuer formed into its HSM from known components (a blank chip must be
made with its key; every other key reaches it by secure messaging from the HSM)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

from hsm import pboc, pinblock
from hsm.des import Des, adjust_parity
from hsm.interface import Hsm
from hsm.keys import KeyRef, KeyUsage
from hsm.lmk import Component
from hsm.soft import SoftHsm
from simulators.card import CardState, VirtualCard
from simulators.psam import PsamState, VirtualPsam
from switch.card_io.connection import CardConnection, DirectConnection
from switch.card_io.personalize import CardMasterKeys, PinEntry, personalize_card, personalize_psam


@dataclass
class ChipMaker:
    control: KeyRef  # the card master control key in the issuer's HSM
    transport: KeyRef  # the PSAM transport master in the issuer's HSM
    pin_pad: KeyRef  # a PIN pad's PIK, for the initial PIN block
    _clear: dict[str, bytes] = field(repr=False)

    @classmethod
    async def form(cls, hsm: SoftHsm, prefix: str, now: datetime) -> ChipMaker:
        clear = {name: adjust_parity(secrets.token_bytes(16)) for name in ("c", "t", "p")}

        async def formed(alias: str, usage: KeyUsage, value: bytes) -> KeyRef:
            return await hsm.form_key(alias, usage, [Component(value)], now=now)

        return cls(
            await formed(f"{prefix}MK_CONTROL", KeyUsage.MK_CONTROL, clear["c"]),
            await formed(f"{prefix}PSAM_TRANSPORT", KeyUsage.PSAM_TRANSPORT, clear["t"]),
            await formed(f"{prefix}PIN_PAD", KeyUsage.PIK, clear["p"]),
            clear,
        )

    def blank_card(self, serial: bytes) -> CardConnection:
        key = pboc.diversify(Des(self._clear["c"]), pboc.card_factor(serial))
        conn = DirectConnection(VirtualCard(CardState.blank(serial, key)))
        conn.connect()
        return conn

    def blank_psam(self, serial: bytes) -> CardConnection:
        key = pboc.diversify(Des(self._clear["t"]), pboc.card_factor(serial))
        conn = DirectConnection(VirtualPsam(PsamState.blank(serial, key)))
        conn.connect()
        return conn

    def pin_entry(self, pin: str, pan: str) -> PinEntry:
        block = Des(self._clear["p"]).encrypt_ecb(pinblock.encode_format0(pin, pan))
        return PinEntry(self.pin_pad, block, pan)

    async def card(
        self, hsm: Hsm, keys: CardMasterKeys, serial: bytes, pan: str, pin: str
    ) -> CardConnection:
        """A blank card personalised by the issuer: keys, files, the initial PIN."""
        conn = self.blank_card(serial)
        public = bytes(10) + serial + bytes(10)
        await personalize_card(
            conn, hsm, keys, serial, public, bytes(39), bytes(60), self.pin_entry(pin, pan)
        )
        return conn

    async def psam(
        self, hsm: Hsm, purchase: KeyRef, serial: bytes, terminal_no: bytes
    ) -> CardConnection:
        conn = self.blank_psam(serial)
        await personalize_psam(
            conn, hsm, self.transport, purchase, serial, terminal_no, purchase.version
        )
        return conn

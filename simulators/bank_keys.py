"""The bank side of a link's security, shared by the bank simulator's acquirer and issuer:
X9.19 MACs in field 128 and the zone keys (:class:`BankKeys`) a key change replaces."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hsm.errors import HsmError
from hsm.interface import Hsm, MacAlgorithm
from hsm.keys import KeyRef, KeyUsage
from messages.codec import Codec, Message
from messages.spec_bank import BANK

CODEC = Codec(BANK)


async def mac_payload(hsm: Hsm, zak: KeyRef, message: Message, *, bad_mac: bool = False) -> bytes:
    """``message`` encoded with its X9.19 MAC in field 128."""
    fields = dict(message.fields)
    fields[128] = bytes(8)
    payload = CODEC.encode(Message(message.mti, fields))
    mac = await hsm.generate_mac(zak, MacAlgorithm.X9_19, CODEC.mac_block(payload))
    return CODEC.with_mac(payload, bytes(8) if bad_mac else mac)


async def mac_verifies(hsm: Hsm, zak: KeyRef, payload: bytes, mac: bytes | None) -> bool:
    if mac is None:
        return False
    return await hsm.verify_mac(zak, MacAlgorithm.X9_19, CODEC.mac_block(payload), mac)


EXCHANGED = (KeyUsage.ZAK, KeyUsage.ZPK, KeyUsage.FILE)


@dataclass
class BankKeys:
    """The bank's side of a link's zone keys: its ZAK (and the previous one for ``overlap_s``
    after a change), its ZMK, and where the keys it takes or makes are stored (``prefix``)."""

    zak: KeyRef
    zmk: KeyRef | None = None
    prefix: str = "bank-sim"
    overlap_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    previous: KeyRef | None = None
    changed_at: float = 0.0

    def accepted(self) -> list[KeyRef]:
        keys = [self.zak]
        if self.previous is not None and self.clock() - self.changed_at < self.overlap_s:
            keys.append(self.previous)
        return keys

    def _switch(self, zak: KeyRef) -> None:
        self.previous, self.zak, self.changed_at = self.zak, zak, self.clock()

    async def take(self, hsm: Hsm, field48: str, now: datetime) -> str | None:
        """The centre's offer imported under the ZMK (KCVs checked): the answer's F48, or None."""
        if self.zmk is None:
            return None
        taken: list[str] = []
        new_zak = None
        try:
            for item in field48.split(";"):
                usage, _, value = item.partition("=")
                encrypted, _, kcv = value.partition("/")
                kind = KeyUsage(usage)
                ref = await hsm.import_key(
                    f"{self.prefix}/{usage}", kind, self.zmk, bytes.fromhex(encrypted), kcv, now=now
                )
                taken.append(f"{usage}={ref.kcv}")
                new_zak = ref if kind is KeyUsage.ZAK else new_zak
        except (HsmError, ValueError):
            return None
        if new_zak is not None:
            self._switch(new_zak)
        return ";".join(taken)

    async def offer(self, hsm: Hsm, now: datetime) -> tuple[str, KeyRef]:
        """New keys exported under the ZMK (the bank changes its inbound link's keys)."""
        assert self.zmk is not None, "a key change needs the link's ZMK"
        items: list[str] = []
        zak = self.zak
        for usage in EXCHANGED:
            fresh = await hsm.generate_key(f"{self.prefix}/{usage.value}", usage, now=now)
            out = await hsm.export_key(fresh, self.zmk)
            items.append(f"{usage.value}={out.encrypted.hex().upper()}/{out.kcv}")
            zak = fresh if usage is KeyUsage.ZAK else zak
        return ";".join(items), zak

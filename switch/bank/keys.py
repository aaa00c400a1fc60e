"""Zone key exchange on a bank link (0800 F70 = 101): new ZAK, ZPK and file key under the link's
ZMK, each with its KCV, in F48 as ``USAGE=<key under ZMK, hex>/<KCV>`` items joined by ``;``;
the answer (0810) echoes ``USAGE=<KCV>`` for the keys it took.

Both directions: the centre changes the keys of its outbound link (to the bank as savings
issuer) — on demand or on a schedule — and the bank changes the keys of its inbound link
(the bank as acquirer) by sending the same message. Keys never leave the HSM in clear: the
sender generates them under a *pending* alias and exports them under the ZMK; only when the
receiver answers 00 with the same KCVs does the sender import them as the link's next version
(so a refused or lost change changes nothing). The receiver imports them under the ZMK
(:meth:`Hsm.import_key` checks each KCV).

After a change the previous ZAK still verifies for ``overlap_s`` (messages already in flight,
a peer a moment behind); MACs are always made under the current one — except a reply, which is
MACed under the key its request verified with. The overlap is counted from the change this
process made or took (a restart ends it early: the peer signs on again after a reconnect).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hsm.errors import HsmError
from hsm.interface import Hsm
from hsm.keys import KeyRef, KeyUsage
from switch.config import BankConfig
from switch.sessions import Sessions

log = logging.getLogger("medswitch.bank.keys")

EXCHANGED = (KeyUsage.ZAK, KeyUsage.ZPK, KeyUsage.FILE)
ITEMS_MAX = 8


class KeyChangeError(ValueError):
    """A key change that cannot be taken (malformed F48, a KCV that does not match)."""


@dataclass(frozen=True, slots=True)
class LinkAliases:
    zmk: str
    zak: str
    zpk: str
    file: str

    def of(self, usage: KeyUsage) -> str:
        return {KeyUsage.ZAK: self.zak, KeyUsage.ZPK: self.zpk, KeyUsage.FILE: self.file}[usage]


def _file_alias(config: BankConfig) -> str:
    return config.zmk_alias.rpartition("/")[0] + "/FILE"


def inbound_aliases(config: BankConfig) -> LinkAliases:
    """The keys of the link the bank opens (as acquirer): the bank changes them."""
    return LinkAliases(config.zmk_alias, config.zak_alias, config.zpk_alias, _file_alias(config))


def outbound_aliases(config: BankConfig) -> LinkAliases:
    """The keys of the link the centre opens (to the bank as issuer): the centre changes them."""
    return LinkAliases(
        config.zmk_alias,
        config.outbound_zak_alias,
        config.outbound_zpk_alias,
        _file_alias(config),
    )


def parse_items(field48: str) -> dict[str, tuple[str, str]]:
    """``USAGE=hex/KCV;...`` → {usage: (hex, kcv)}.

    >>> parse_items("ZAK=0011223344556677/ABCDEF;ZPK=8899AABBCCDDEEFF/123456")["ZPK"]
    ('8899AABBCCDDEEFF', '123456')
    """
    items: dict[str, tuple[str, str]] = {}
    parts = [p for p in field48.split(";") if p]
    if not parts or len(parts) > ITEMS_MAX:
        raise KeyChangeError("F48 names no keys")
    for part in parts:
        usage, _, value = part.partition("=")
        key, _, kcv = value.partition("/")
        if usage not in {u.value for u in EXCHANGED} or usage in items:
            raise KeyChangeError(f"F48: {usage!r} is not ZAK, ZPK or FILE (once each)")
        if not key or len(key) % 16 or len(kcv) != 6:
            raise KeyChangeError(f"F48: {usage} is not a key under the ZMK with a 6H KCV")
        try:
            bytes.fromhex(key + kcv)
        except ValueError:
            raise KeyChangeError(f"F48: {usage} is not hex") from None
        items[usage] = (key.upper(), kcv.upper())
    return items


class LinkKeys:
    """One link direction's zone keys: the current versions in the key store, the previous ZAK
    for the overlap after a change, and the exchange itself."""

    def __init__(
        self,
        hsm: Hsm,
        sessions: Sessions,
        aliases: LinkAliases,
        overlap_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hsm = hsm
        self.sessions = sessions
        self.aliases = aliases
        self.overlap_s = overlap_s
        self.clock = clock
        self.changes = 0
        self._previous: KeyRef | None = None  # the ZAK before the last change
        self._changed_at = 0.0

    async def current(self) -> KeyRef | None:
        """The ZAK messages are MACed under."""
        return await self.sessions.latest(self.aliases.zak, KeyUsage.ZAK)

    async def zpk(self) -> KeyRef | None:
        return await self.sessions.latest(self.aliases.zpk, KeyUsage.ZPK)

    async def accepted(self) -> list[KeyRef]:
        """The ZAKs a MAC may verify under now: the current, and the previous in the overlap."""
        current = await self.current()
        keys = [current] if current is not None else []
        previous = self._previous
        if previous is not None and self.clock() - self._changed_at < self.overlap_s:
            keys.append(previous)
        return keys

    def _changed(self, before: KeyRef | None) -> None:
        self._previous, self._changed_at = before, self.clock()
        self.changes += 1

    async def offer(self, now: datetime) -> tuple[str, dict[KeyUsage, tuple[bytes, str]]]:
        """New keys under pending aliases, exported under the ZMK: (F48, what to install)."""
        zmk = await self._zmk()
        items: list[str] = []
        exported: dict[KeyUsage, tuple[bytes, str]] = {}
        for usage in EXCHANGED:
            pending = f"{self.aliases.of(usage)}/pending"
            fresh = await self.hsm.generate_key(pending, usage, now=now)
            out = await self.hsm.export_key(fresh, zmk)
            exported[usage] = (out.encrypted, out.kcv)
            items.append(f"{usage.value}={out.encrypted.hex().upper()}/{out.kcv}")
        return ";".join(items), exported

    async def install(self, exported: dict[KeyUsage, tuple[bytes, str]], now: datetime) -> None:
        """The peer took the offered keys: they become the link's next versions."""
        zmk = await self._zmk()
        before = await self.current()
        for usage, (encrypted, kcv) in exported.items():
            alias = self.aliases.of(usage)
            await self.hsm.import_key(alias, usage, zmk, encrypted, kcv, now=now)
        self._changed(before)
        log.info("bank link keys %s changed (ZAK %s)", self.aliases.zak, exported[KeyUsage.ZAK][1])

    async def take(self, field48: str, now: datetime) -> str:
        """The peer's offer (F48): imported under the ZMK, KCVs checked; the answer's F48."""
        items = parse_items(field48)
        if KeyUsage.ZAK.value not in items:
            raise KeyChangeError("F48: a key change always changes the ZAK")
        zmk = await self._zmk()
        before = await self.current()
        offered = [(u, *items[u.value]) for u in EXCHANGED if u.value in items]
        try:  # every KCV checked under a pending alias first: all are taken, or none
            for usage, encrypted, kcv in offered:
                pending = f"{self.aliases.of(usage)}/pending"
                await self.hsm.import_key(
                    pending, usage, zmk, bytes.fromhex(encrypted), kcv, now=now
                )
        except HsmError as err:
            raise KeyChangeError(f"key change refused: {err}") from None
        taken: list[str] = []
        for usage, encrypted, kcv in offered:
            alias = self.aliases.of(usage)
            ref = await self.hsm.import_key(
                alias, usage, zmk, bytes.fromhex(encrypted), kcv, now=now
            )
            taken.append(f"{usage.value}={ref.kcv}")
        self._changed(before)
        return ";".join(taken)

    async def _zmk(self) -> KeyRef:
        zmk = await self.sessions.latest(self.aliases.zmk, KeyUsage.ZMK)
        if zmk is None:
            raise KeyChangeError(f"no ZMK {self.aliases.zmk}")
        return zmk


def kcvs_of(field48: str | None) -> dict[str, str]:
    """The answer's ``USAGE=KCV`` items."""
    found: dict[str, str] = {}
    for part in (field48 or "").split(";"):
        usage, _, kcv = part.partition("=")
        if usage and kcv:
            found[usage] = kcv.upper()
    return found

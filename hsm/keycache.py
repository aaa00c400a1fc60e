"""Keys unwrapped from the store, kept with their cipher contexts (DESIGN §6).

Stored keys are immutable per (alias, version), so a cache entry never goes stale. The cache
is bounded; the oldest entries are dropped first.
"""

from __future__ import annotations

from datetime import datetime

from hsm import keyblock, pboc
from hsm.des import Des
from hsm.errors import KeyExistsError, KeyTamperedError, KeyUsageError
from hsm.keys import CardKeyPath, KeyRef, KeyUsage, check_alias
from hsm.keystore import KeyStore
from hsm.lmk import Lmk, refuse_test_only_key

PUT_ATTEMPTS = 3


class LoadedKey:
    """A clear key and its contexts. repr shows no key bytes."""

    __slots__ = ("_left", "_tac", "des", "key", "ref")

    def __init__(self, ref: KeyRef, key: bytes) -> None:
        self.ref = ref
        self.key = key
        self.des = Des(key)
        self._left: Des | None = None
        self._tac: Des | None = None

    @property
    def halves_xor(self) -> Des:
        """Single DES under left ⊕ right: the TAC key of a DTK, the MAC key of a DRPK."""
        if self._tac is None:
            self._tac = Des(pboc.tac_key(self.key))
        return self._tac

    @property
    def left(self) -> Des:
        """Single-DES context on the left half (alg 3)."""
        if self._left is None:
            self._left = Des(self.key[:8])
        return self._left

    def __repr__(self) -> str:
        return f"LoadedKey({self.ref.alias!r}, v{self.ref.version}, {self.ref.usage.value})"


class KeyCache:
    def __init__(
        self, lmk: Lmk, store: KeyStore, size_max: int = 100_000, cards_max: int = 4096
    ) -> None:
        self._lmk = lmk
        self.store = store
        self._size_max = size_max
        self._cards_max = cards_max
        self._loaded: dict[tuple[str, int], LoadedKey] = {}
        self._cards: dict[tuple[str, int, tuple[bytes, ...]], LoadedKey] = {}

    def __repr__(self) -> str:
        return f"KeyCache(lmk={self._lmk.kcv!r}, {len(self._loaded)} loaded)"

    @property
    def lmk_kcv(self) -> str:
        return self._lmk.kcv

    @property
    def lmk_test_only(self) -> bool:
        """Whether the LMK is formed from the published TEST ONLY components (the demo's)."""
        return self._lmk.test_only

    def erase(self) -> None:
        """Forget every clear key and erase the LMK (best effort: Python bytes are immutable,
        so dropped keys live until the memory is reused)."""
        self._loaded.clear()
        self._cards.clear()
        self._lmk.erase()

    def loaded(self, ref: KeyRef, *usages: KeyUsage) -> LoadedKey | None:
        """:meth:`load` without a coroutine, for a key already in memory (every call after
        a key's first: an exchange makes five HSM calls); None when it is not."""
        if usages and ref.usage not in usages:
            ref.require(*usages)  # raises, naming the usages
        entry = self._loaded.get((ref.alias, ref.version))
        if entry is None:
            return None
        if entry.ref is ref:  # the reference it was stored or loaded under: as checked below
            return entry
        if entry.ref.usage is not ref.usage:
            raise KeyUsageError(
                f"key {ref.alias} v{ref.version} is {entry.ref.usage.value}, "
                f"referenced as {ref.usage.value}"
            )
        if ref.kcv and ref.kcv != entry.ref.kcv:
            raise KeyTamperedError(f"key {ref.alias} v{ref.version}: check value differs")
        return entry

    async def load(self, ref: KeyRef, *usages: KeyUsage) -> LoadedKey:
        entry = self.loaded(ref, *usages)
        if entry is None:
            stored = await self.store.get(ref.alias, ref.version)
            key = keyblock.unwrap(self._lmk.key_bytes(), stored, ref)
            entry = self._remember(LoadedKey(stored.ref, key))
        return entry

    def loaded_card(self, path: CardKeyPath, *usages: KeyUsage) -> LoadedKey | None:
        """:meth:`card` without a coroutine, when its master key is in memory."""
        master = self.loaded(path.master, *usages)
        return None if master is None else self._diversified(master, path)

    async def card(self, path: CardKeyPath, *usages: KeyUsage) -> LoadedKey:
        """The master key diversified by each factor in turn (recent card keys are kept)."""
        entry = self.loaded_card(path, *usages)
        if entry is None:
            entry = self._diversified(await self.load(path.master, *usages), path)
        return entry

    def _diversified(self, master: LoadedKey, path: CardKeyPath) -> LoadedKey:
        if not path.factors:
            return master
        ident = (path.master.alias, path.master.version, path.factors)
        entry = self._cards.get(ident)
        if entry is None:
            key = pboc.diversify(master.des, path.factors[0])
            for factor in path.factors[1:]:
                key = pboc.diversify(Des(key), factor)
            entry = LoadedKey(master.ref, key)
            if len(self._cards) >= self._cards_max:
                del self._cards[next(iter(self._cards))]
            self._cards[ident] = entry
        return entry

    async def card_key(self, path: CardKeyPath, *usages: KeyUsage) -> bytes:
        return (await self.card(path, *usages)).key

    async def next_version(self, alias: str, usage: KeyUsage) -> int:
        existing = await self.store.list(check_alias(alias))
        if any(r.usage is not usage for r in existing):
            raise KeyUsageError(f"alias {alias} holds keys of another usage")
        return max((r.version for r in existing), default=0) + 1

    async def exportable(self, ref: KeyRef) -> bool:
        """Whether the stored key was made exportable, read from its block as stored now
        (checked again: the byte read is under the block's MAC)."""
        stored = await self.store.get(ref.alias, ref.version)
        keyblock.unwrap(self._lmk.key_bytes(), stored, ref)
        return keyblock.exportable(stored)

    async def put(
        self, alias: str, usage: KeyUsage, key: bytes, now: datetime, *, exportable: bool = False
    ) -> KeyRef:
        """Store a new clear key (wrapped) as the next version of `alias`. A published TEST
        ONLY key is refused unless the LMK is the TEST ONLY one (`refuse_test_only_key`)."""
        refuse_test_only_key(self._lmk, alias, key)
        ref = await self.put_wrapped(alias, usage, key, now, exportable=exportable)
        self._remember(LoadedKey(ref, key))
        return ref

    async def put_wrapped(
        self, alias: str, usage: KeyUsage, key: bytes, now: datetime, *, exportable: bool = False
    ) -> KeyRef:
        """Wrap and store `key` as the next version of `alias` (not kept in memory: the RSA
        signing key's way in, hsm.signing). Another process sharing the store may take a
        version first; then the next one is tried."""
        check = keyblock.check_value(usage, key)
        for attempt in range(PUT_ATTEMPTS):
            version = await self.next_version(alias, usage)
            ref = KeyRef(alias, version, usage, check)
            stored = keyblock.wrap(
                self._lmk.key_bytes(), ref, key, now.isoformat(), exportable=exportable
            )
            try:
                await self.store.put(stored)
            except KeyExistsError:
                if attempt + 1 == PUT_ATTEMPTS:
                    raise
                continue
            return ref
        raise AssertionError("unreachable")

    async def unwrapped(self, ref: KeyRef) -> bytes:
        """The stored key of `ref`, checked and unwrapped, not kept (hsm.signing keeps it)."""
        stored = await self.store.get(ref.alias, ref.version)
        return keyblock.unwrap(self._lmk.key_bytes(), stored, ref)

    def _remember(self, entry: LoadedKey) -> LoadedKey:
        if len(self._loaded) >= self._size_max:
            del self._loaded[next(iter(self._loaded))]
        self._loaded[(entry.ref.alias, entry.ref.version)] = entry
        return entry

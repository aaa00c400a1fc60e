"""LMK formation, TR-31 key blocks and the key stores (memory and file) behind one interface."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hsm import keyblock
from hsm.errors import (
    InvalidInputError,
    KcvMismatchError,
    KeyExistsError,
    KeyNotFoundError,
    KeyTamperedError,
    KeyUsageError,
    LmkError,
)
from hsm.keycache import KeyCache
from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import KeyStore, MemoryKeyStore
from hsm.lmk import Component, Lmk, combine, generate_component
from switch.keystore_file import FileKeyStore
from tests.support import psec_oracle as oracle

A = "0123456789ABCDEFFEDCBA9876543210"
B = "10101010101010102323232323232323"
LMK_KCV = oracle.kcv(bytes.fromhex("1032547698BADCFEDCFE98BA54761032"))
SECRET = bytes.fromhex("CA5D92598DCA48CE8A4C76361A9269E9")


def lmk() -> Lmk:
    return Lmk([Component.parse(A), Component.parse(B)], LMK_KCV)


def test_lmk_from_components_forces_parity_and_checks_kcv() -> None:
    formed = lmk()
    assert formed.kcv == LMK_KCV == oracle.kcv(combine([Component.parse(A), Component.parse(B)]))
    with pytest.raises(LmkError):
        Lmk([Component.parse(A), Component.parse(B)], "000000")
    with pytest.raises(LmkError):
        Lmk([Component.parse(A)], oracle.kcv(bytes.fromhex(A)))
    with pytest.raises(LmkError):
        Lmk([Component.parse(A)] * 10, "000000")
    formed.erase()
    with pytest.raises(LmkError):
        formed.key_bytes()


def test_three_to_nine_components() -> None:
    def filler(byte: int) -> Callable[[int], bytes]:
        return lambda n: bytes([byte]) * n

    parts = [generate_component(filler(i + 1)) for i in range(9)]
    for count in range(2, 10):
        key = combine(parts[:count])
        assert Lmk(parts[:count], oracle.kcv(key)).kcv == oracle.kcv(key)


def test_component_kcv_and_reveal() -> None:
    component = Component.parse("0123 4567 89AB CDEF FEDC BA98 7654 3210", "08D7B4")
    assert repr(component) == "Component(kcv='08D7B4')" and "0123" not in str(component)
    assert component.reveal().replace(" ", "") == A
    with pytest.raises(KcvMismatchError):
        Component.parse(A, "123456")
    with pytest.raises(InvalidInputError):
        Component.parse("XYZ")


def test_key_block_round_trip_and_tamper() -> None:
    key = lmk().key_bytes()
    ref = KeyRef("tmk/00000001", 1, KeyUsage.TMK)
    stored = keyblock.wrap(key, ref, SECRET, "2026-11-25T10:00:00")
    assert stored.kcv == oracle.kcv(SECRET)
    assert SECRET.hex().upper() not in stored.block.upper()
    assert keyblock.unwrap(key, stored, ref) == SECRET
    # A flipped character in the encrypted part or in the header.
    for pos in (len(stored.block) - 20, 30):
        flipped = "0" if stored.block[pos] != "0" else "1"
        block = stored.block[:pos] + flipped + stored.block[pos + 1 :]
        with pytest.raises(KeyTamperedError):
            keyblock.unwrap(key, dataclasses.replace(stored, block=block), ref)
    # The index record edited to claim another usage, alias or KCV.
    for change in (
        {"usage": KeyUsage.MAK},
        {"alias": "tmk/00000002"},
        {"kcv": "000000"},
        {"version": 2},
    ):
        edited = dataclasses.replace(stored, **change)
        with pytest.raises(KeyTamperedError):
            keyblock.unwrap(key, edited, ref)
    # Asked for as another usage.
    with pytest.raises(KeyUsageError):
        keyblock.unwrap(key, stored, dataclasses.replace(ref, usage=KeyUsage.ZMK))
    # Under another LMK.
    other = bytes(16)
    with pytest.raises(KeyTamperedError):
        keyblock.unwrap(other, stored, ref)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "memory":
        yield MemoryKeyStore()
    else:
        yield FileKeyStore(tmp_path / "keys.jsonl")


def test_store_interface(store: KeyStore) -> None:
    key = lmk().key_bytes()
    first = keyblock.wrap(key, KeyRef("zmk/bank1", 1, KeyUsage.ZMK), SECRET, "t1")
    second = keyblock.wrap(key, KeyRef("zmk/bank1", 2, KeyUsage.ZMK), SECRET[::-1], "t2")
    other = keyblock.wrap(key, KeyRef("a/other", 1, KeyUsage.ZMK), SECRET, "t3")

    async def run() -> None:
        for record in (second, first, other):
            await store.put(record)
        with pytest.raises(KeyExistsError):
            await store.put(first)
        assert await store.get("zmk/bank1", 2) == second
        with pytest.raises(KeyNotFoundError):
            await store.get("zmk/bank1", 3)
        assert await store.list("zmk/bank1") == [first, second]
        assert [r.alias for r in await store.list()] == ["a/other", "zmk/bank1", "zmk/bank1"]

    asyncio.run(run())


def test_file_store_survives_reopen_and_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    record = keyblock.wrap(lmk().key_bytes(), KeyRef("t/1", 1, KeyUsage.TMK), SECRET, "t")

    async def run() -> None:
        await FileKeyStore(path).put(record)
        with path.open("ab") as handle:
            handle.write(b'{"alias":"torn"')  # a crash mid-append
        reopened = FileKeyStore(path)
        assert await reopened.list() == [record]
        later = dataclasses.replace(record, version=2)
        await reopened.put(later)  # terminates the torn line first
        assert await FileKeyStore(path).list() == [record, later]

    asyncio.run(run())
    assert SECRET.hex().upper() not in path.read_text().upper()


def test_file_store_sees_keys_added_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    record = keyblock.wrap(lmk().key_bytes(), KeyRef("t/1", 1, KeyUsage.TMK), SECRET, "t")

    async def run() -> None:
        reader = FileKeyStore(path)
        await FileKeyStore(path).put(record)
        assert await reader.get("t/1", 1) == record

    asyncio.run(run())


def test_published_test_components_are_labelled_and_refused_in_production() -> None:
    from hsm.lmk import TEST_ONLY_COMPONENTS, TEST_ONLY_LMK_KCV

    parts = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]
    demo = Lmk(parts, TEST_ONLY_LMK_KCV)
    assert demo.test_only and "TEST ONLY" in repr(demo)
    with pytest.raises(LmkError, match="TEST ONLY"):
        Lmk(parts, TEST_ONLY_LMK_KCV, production=True)
    own = [generate_component(lambda n: b"\x5a" * n), generate_component(lambda n: b"\x33" * n)]
    assert not Lmk(own, oracle.kcv(combine(own)), production=True).test_only


def test_a_version_taken_by_another_process_is_skipped(tmp_path: Path) -> None:
    from datetime import datetime

    from hsm.soft import SoftHsm

    path = tmp_path / "keys.jsonl"

    class Racing(FileKeyStore):
        """Another process appends version 1 between our version pick and our put."""

        raced = False

        async def put(self, stored: keyblock.StoredKey) -> None:
            if not self.raced:
                self.raced = True
                other = keyblock.wrap(lmk().key_bytes(), stored.ref, SECRET, "other")
                await FileKeyStore(path).put(other)
            await super().put(stored)

    async def run() -> None:
        soft = SoftHsm(lmk(), Racing(path))
        ref = await soft.generate_key("zpk/b1", KeyUsage.ZPK, now=datetime(2026, 1, 1))
        assert ref.version == 2
        assert [r.version for r in await FileKeyStore(path).list()] == [1, 2]

    asyncio.run(run())


def test_a_key_in_memory_is_taken_without_awaiting_with_the_same_checks() -> None:
    """KeyCache.loaded (the hot path's) answers as load does, or None when load must read the
    store; usage and check value are enforced the same way."""
    cache = KeyCache(lmk(), MemoryKeyStore())
    ref = asyncio.run(cache.put("t/TDK", KeyUsage.TDK, SECRET, datetime(2026, 11, 25)))
    fresh = KeyCache(lmk(), cache.store)
    assert fresh.loaded(ref, KeyUsage.TDK) is None  # not yet read from the store
    entry = asyncio.run(fresh.load(ref, KeyUsage.TDK))
    assert fresh.loaded(ref, KeyUsage.TDK, KeyUsage.FILE) is entry
    with pytest.raises(KeyUsageError):
        fresh.loaded(ref, KeyUsage.MAK)
    with pytest.raises(KeyUsageError):
        fresh.loaded(dataclasses.replace(ref, usage=KeyUsage.MAK))
    with pytest.raises(KeyTamperedError):
        fresh.loaded(dataclasses.replace(ref, kcv="000000"))

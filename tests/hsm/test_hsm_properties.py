"""Hypothesis through the HSM interface (SoftHsm): MACs, PIN translation and KCVs on random
keys and data agree with psec; and nothing a run produces shows a clear key or PIN block."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm.errors import HsmError
from hsm.interface import MacAlgorithm, OnlineTxn
from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from hsm.lmk import Component
from hsm.soft import SoftHsm
from tests.support import psec_oracle as oracle
from tests.support.hsm_keys import KNOWN_KEYS, LMK_A, LMK_B, NOW, load_known_keys, make_soft_hsm

U = KeyUsage
keys16 = st.binary(min_size=16, max_size=16)
keys8 = st.binary(min_size=8, max_size=8)
data = st.binary(min_size=1, max_size=300)


async def with_key(soft: SoftHsm, usage: KeyUsage, value: bytes, alias: str = "k") -> KeyRef:
    return await soft.form_key(alias, usage, [Component(value)], now=NOW)


@given(st.one_of(keys8, keys16), data)
def test_mac_x9_9_matches_psec(key: bytes, message: bytes) -> None:
    async def run() -> None:
        soft = make_soft_hsm()
        ref = await with_key(soft, U.ZAK, key)
        got = await soft.generate_mac(ref, MacAlgorithm.X9_9, message)
        assert got == oracle.cbc_mac(key, message, 1)
        assert await soft.kcv(ref) == oracle.kcv(key) == ref.kcv

    asyncio.run(run())


@given(keys16, data)
def test_mac_x9_19_matches_psec(key: bytes, message: bytes) -> None:
    async def run() -> None:
        soft = make_soft_hsm()
        ref = await with_key(soft, U.ZAK, key)
        got = await soft.generate_mac(ref, MacAlgorithm.X9_19, message)
        assert got == oracle.retail_mac(key, message, 1)
        assert await soft.verify_mac(ref, MacAlgorithm.X9_19, message, got)

    asyncio.run(run())


@given(
    keys16,
    keys16,
    st.from_regex(r"\A[0-9]{4,12}\Z"),
    st.from_regex(r"\A[0-9]{13,19}\Z"),
)
def test_pin_translation_matches_psec(pik: bytes, zpk: bytes, pin: str, pan: str) -> None:
    async def run() -> None:
        soft = make_soft_hsm()
        src = await with_key(soft, U.PIK, pik, "pik")
        dst = await with_key(soft, U.ZPK, zpk, "zpk")
        block = oracle.tdes_ecb_encrypt(pik, oracle.pinblock0(pin, pan))
        out = await soft.translate_pin(src, dst, block, pan)
        assert oracle.pin_from_block0(oracle.tdes_ecb_decrypt(zpk, out), pan) == pin
        assert oracle.tdes_ecb_decrypt(zpk, out) == oracle.pinblock0(pin, pan)

    asyncio.run(run())


def _secrets() -> list[str]:
    values = [v for _, v in KNOWN_KEYS.values()]
    values += [LMK_A.reveal().replace(" ", ""), LMK_B.reveal().replace(" ", "")]
    values.append("041277CDDEEFF669")  # a clear PIN block
    out = []
    for v in values:
        for part in (v, v[:16], v[16:]):
            if part:
                out += [part.upper(), part.lower()]
    return out


def test_no_key_material_in_reprs_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def run() -> None:
        soft = make_soft_hsm()
        refs = await load_known_keys(soft)
        seen.extend([repr(soft), str(soft), repr(soft._keys), repr(LMK_A), str(LMK_B)])
        for ref in refs.values():
            loaded = await soft._keys.load(ref)
            seen.extend([repr(ref), repr(loaded), repr(loaded.des), repr(loaded.left)])
        for record in await soft._keys.store.list():
            seen.append(repr(record.ref))
        signed = await soft.sign_on(refs["v7/tmk"], 60, "pos/1", now=NOW)
        seen.append(repr(signed.pik))
        txn = OnlineTxn(1, 0, 1, 0, bytes(4), bytes(6), bytes(4))
        attempts = [
            soft.translate_pin(refs["v8/mak"], refs["bank/zpk"], bytes(8), "5544332211009966"),
            soft.translate_pin(refs["term/pik"], refs["bank/zpk"], bytes(8), "5544332211009966"),
            soft.generate_mac2(CardKeyPath(refs["v1/load"]), txn, datetime(2026, 1, 1)),
            soft.export_key(refs["v1/load"], refs["bank/zmk"]),
            soft.import_key("x", U.ZPK, refs["bank/zmk"], bytes(16), "123456", now=NOW),
            soft.kcv(refs["v4/load"].__class__("v4/load", 1, U.MK_TAC)),
        ]
        for attempt in attempts:
            with pytest.raises(HsmError) as caught:
                await attempt
            seen.extend([str(caught.value), repr(caught.value)])

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    seen.extend(r.getMessage() for r in caplog.records)
    text = "\n".join(seen)
    assert "v1/load" in text  # the scan did see the references
    for secret in _secrets():
        assert secret not in text


def test_close_erases_the_lmk_and_keys() -> None:
    from hsm.errors import LmkError

    async def run() -> None:
        soft = make_soft_hsm()
        refs = await load_known_keys(soft)
        assert await soft.kcv(refs["bank/zpk"])
        await soft.close()
        with pytest.raises(LmkError):
            await soft.kcv(refs["bank/zpk"])
        with pytest.raises(LmkError):
            await soft.generate_key("new", U.ZPK, now=NOW)

    asyncio.run(run())

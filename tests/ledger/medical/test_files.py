"""Catalogue and policy files: round trips, MACs under a file key, refusals of the whole file."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from hsm.keys import KeyRef, KeyUsage
from hsm.lmk import Component
from hsm.soft import SoftHsm
from ledger.medical import filemac
from ledger.medical.catalogue import (
    CatalogueVersion,
    build_catalogue,
    diff,
    effective_on,
    parse_catalogue,
)
from ledger.medical.policy import EXAMPLE, PolicyError, parse_policy
from ledger.medical.recordfile import MedicalFileError, build, parse
from tests.support.hsm_keys import make_soft_hsm
from tests.support.medical import CATALOGUE

NOW = dt.datetime(2026, 11, 25, 10, 0, 0)


async def _file_key(hsm: SoftHsm) -> KeyRef:
    value = bytes.fromhex("13579BDF02468ACE13579BDF02468ACE")
    return await hsm.form_key("his/1001/file", KeyUsage.FILE, [Component(value)], now=NOW)


def test_catalogue_file_round_trip_and_mac() -> None:
    async def body() -> None:
        hsm = make_soft_hsm()
        key = await _file_key(hsm)
        data = await filemac.seal(hsm, key, build_catalogue(CATALOGUE))
        assert data == await filemac.seal(hsm, key, build_catalogue(CATALOGUE))  # deterministic
        framed = parse(data, "CATALOGUE")
        await filemac.verify(hsm, key, framed)
        assert parse_catalogue(data) == CATALOGUE
        tampered = data.replace("1000|甲".encode(), "1001|甲".encode(), 1)
        with pytest.raises(MedicalFileError):
            parse_catalogue(tampered)  # the trailer total no longer matches
        forged = data.replace("阿莫西林".encode(), "阿莫西X".encode(), 1)
        parse_catalogue(forged)  # framing fine ...
        with pytest.raises(MedicalFileError, match="MAC"):
            await filemac.verify(hsm, key, parse(forged, "CATALOGUE"))  # ... the MAC is not

    asyncio.run(body())


@pytest.mark.parametrize(
    ("records", "total", "message"),
    [
        ([["X", "n", "u", "100", "丁", "0"]], 100, "coverage"),
        ([["X", "n", "u", "1x0", "甲", "0"]], 100, "integer"),
        ([["X", "n", "u", "100", "甲", "500"]], 100, "self-pay"),
        ([["X", "n", "u", "100", "甲", "0"], ["X", "n", "u", "100", "甲", "0"]], 200, "twice"),
        ([["X", "n", "u", "100", "甲", "0"]], 99, "total"),
        ([["X", "n", "u", "100", "甲"]], 100, "6 fields"),
    ],
)
def test_bad_catalogue_records_refuse_the_file(
    records: list[list[str]], total: int, message: str
) -> None:
    data = build("CATALOGUE", ["1", "20260101"], records, amount_total_fen=total)
    with pytest.raises(MedicalFileError, match=message):
        parse_catalogue(data + b"M|0000000000000000\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"H|CATALOGUE|1|20260101\nT|0|0\n",
        b"H|CATALOGUE|1|20260101\nT|1|0\nM|0000000000000000\n",
        b"H|POLICY|1|20260101\nT|0|0\nM|0000000000000000\n",
        b"H|CATALOGUE|1|20260101\nT|0|0\nM|00000000000000\n",
        b"H|CATALOGUE|1|20260101\nT|0|0\nM|0000000000000000",
        b"H|CATALOGUE|1|20261301\nT|0|0\nM|0000000000000000\n",
        b"\xff\xfe\n",
    ],
)
def test_bad_framing_refuses_the_file(data: bytes) -> None:
    with pytest.raises(MedicalFileError):
        parse_catalogue(data)


def test_versions_and_diff() -> None:
    items = dict(CATALOGUE.items)
    del items["C01"]
    items["A01"] = CatalogueVersion(2, dt.date(2026, 7, 1), items).items["A01"]
    import dataclasses

    items["A02"] = dataclasses.replace(items["A02"], ceiling_fen=600)
    later = CatalogueVersion(2, dt.date(2026, 7, 1), items)
    change = diff(CATALOGUE, later)
    assert change.removed == ("C01",) and change.added == ()
    assert [after.ceiling_fen for _, after in change.changed] == [600]
    assert effective_on([CATALOGUE, later], dt.date(2025, 12, 31)) is None
    assert effective_on([later, CATALOGUE], dt.date(2026, 8, 1)) is later


def test_policy_refuses_bad_files() -> None:
    assert parse_policy(EXAMPLE).year == 2026
    for bad in [
        "year = 2026",
        EXAMPLE.replace("retired = [20000, 35000, 60000]", "retired = [20000, 35000]"),
        EXAMPLE.replace("age_below = 200", "age_below = 100"),
        EXAMPLE.replace('"乙" = [8500, 8000, 7500]', '"乙" = [18500, 8000, 7500]'),
        EXAMPLE + "\nsurprise = 1\n",
        EXAMPLE.replace('["offline_purchases"]', '["everything"]'),
        "not toml ===",
    ]:
        with pytest.raises(PolicyError):
            parse_policy(bad)

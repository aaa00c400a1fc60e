"""Payout and refund files: fixed width, deterministic, trailer and MAC checked."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from hsm.keys import KeyRef, KeyUsage
from hsm.lmk import Component
from hsm.soft import SoftHsm
from ledger.dayend import payout_file as pf
from tests.support.hsm_keys import make_soft_hsm

NOW = dt.datetime(2026, 11, 25, 10, 0, 0)
LINES = (
    pf.PayoutLine("20261125-I-h1", "h1", "6200000001", "第1医院", 12_345),
    pf.PayoutLine("20261125-I-p2", "p2", "6200000002", "定点药店2" * 10, 1),
)


async def _key(hsm: SoftHsm, hex_value: str = "13579BDF02468ACE13579BDF02468ACE") -> KeyRef:
    return await hsm.form_key("bank/b1/FILE", KeyUsage.FILE, [Component(bytes.fromhex(hex_value))],
                              now=NOW)


def _run(body: object) -> None:
    asyncio.run(body)  # type: ignore[arg-type]


def test_payout_file_round_trip_deterministic_fixed_width() -> None:
    async def body() -> None:
        hsm = make_soft_hsm()
        key = await _key(hsm)
        f = pf.PayoutFile(pf.PAYOUT, "2026-11-25", "b1", pf.INSURANCE, LINES)
        data, mac = await pf.build(hsm, key, f)
        assert (data, mac) == await pf.build(hsm, key, f)
        assert all(len(line) == pf.LINE_BYTES for line in data[:-1].split(b"\n"))
        checked = await pf.parse(hsm, key, data)
        assert checked.mac == mac and checked.file.total_fen == 12_346
        assert checked.file.lines[0] == LINES[0]
        assert checked.file.lines[1].account_name.startswith("定点药店2")  # cut to 60 bytes
        assert pf.header_bank(data) == "b1"

    _run(body())


@pytest.mark.parametrize(
    ("offset", "new", "message"),
    [
        (1 * 221 + 196, b"9", "total"),  # an amount changed: the trailer's total no longer adds up
        (3 * 221 + 8, b"3", "counts"),  # the trailer's count
        (1 * 221 + 70, b"X", "MAC"),  # the payee's account: only the MAC sees it
    ],
)
def test_a_tampered_file_is_refused(offset: int, new: bytes, message: str) -> None:
    async def body() -> None:
        hsm = make_soft_hsm()
        key = await _key(hsm)
        data, _ = await pf.build(hsm, key, pf.PayoutFile(pf.PAYOUT, "2026-11-25", "b1", pf.EP,
                                                         LINES))
        bad = data[:offset] + new + data[offset + 1 :]
        assert bad != data
        with pytest.raises(pf.PayoutFileError, match=message):
            await pf.parse(hsm, key, bad)

    _run(body())


def test_refund_file_is_encrypted_and_opens_only_under_its_key() -> None:
    async def body() -> None:
        hsm = make_soft_hsm()
        key = await _key(hsm)
        other = await hsm.form_key("bank/b2/FILE", KeyUsage.FILE,
                                   [Component(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))],
                                   now=NOW)
        f = pf.PayoutFile(pf.REFUND, "2026-11-25", "b1", pf.EP,
                          (pf.PayoutLine("20261125-R-c1", "c1", "6222000011", "张三", 500),))
        data, _ = await pf.build(hsm, key, f)
        assert "张三".encode(pf.ENCODING) not in data and not pf.is_plain(data)
        assert (await pf.parse(hsm, key, data)).file == f
        with pytest.raises(pf.PayoutFileError, match="decrypt"):
            await pf.parse(hsm, other, data)
        with pytest.raises(pf.PayoutFileError, match="encrypted"):
            await pf.parse(hsm, key, pf.render(f))

    _run(body())


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(pf.PayoutFileError, match="refunds are EP"):
        pf.render(pf.PayoutFile(pf.REFUND, "2026-11-25", "b1", pf.INSURANCE, LINES))
    with pytest.raises(pf.PayoutFileError, match="positive"):
        pf.render(pf.PayoutFile(pf.PAYOUT, "2026-11-25", "b1", pf.EP,
                                (pf.PayoutLine("x", "h1", "1", "n", 0),)))
    with pytest.raises(pf.PayoutFileError, match="account_no"):
        pf.render(pf.PayoutFile(pf.PAYOUT, "2026-11-25", "b1", pf.EP,
                                (pf.PayoutLine("x", "h1", "1" * 41, "n", 1),)))
    with pytest.raises(pf.PayoutFileError, match="truncated"):
        pf.split(b"H")

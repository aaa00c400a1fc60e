"""A terminal's PIN pad (SoftHsm as the kiosk's secure module): the PIN keyed in leaves it only
as a format 0 block under the PIK — the V10 vector — which the centre's HSM translates."""

from __future__ import annotations

import asyncio

import pytest

from hsm.errors import KeyUsageError
from hsm.interface import PinPad
from tests.support import psec_oracle as oracle
from tests.support.hsm_keys import clear, load_known_keys, make_soft_hsm


def test_the_pin_pad_encrypts_the_v10_block_under_its_pik() -> None:
    pan = "5544332211009966"
    v10 = bytes.fromhex("041277CDDEEFF669")

    async def body() -> None:
        soft = make_soft_hsm()
        refs = await load_known_keys(soft)
        pad: PinPad = soft
        block = await pad.encrypt_pin(refs["term/pik"], "1234", pan)
        assert block == oracle.tdes_ecb_encrypt(clear("term/pik"), v10)
        under_zpk = await soft.translate_pin(refs["term/pik"], refs["bank/zpk"], block, pan)
        assert oracle.tdes_ecb_decrypt(clear("bank/zpk"), under_zpk) == v10
        with pytest.raises(KeyUsageError):  # a MAK never touches a PIN
            await pad.encrypt_pin(refs["v8/mak"], "1234", pan)

    asyncio.run(body())

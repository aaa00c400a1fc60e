"""The HSM interface, table-driven on the reference vectors, run against every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from hsm import cardcrypto, mac, pboc
from hsm.des import Des, adjust_parity, xor
from hsm.errors import (
    CardNotAuthenticatedError,
    InvalidInputError,
    KcvMismatchError,
    KeyNotFoundError,
    KeyUsageError,
    PinBlockError,
)
from hsm.interface import Hsm, MacAlgorithm, OnlineTxn, PurchaseRecord
from hsm.keys import CardKeyPath, KeyRef, KeyUsage
from tests.support import psec_oracle as oracle
from tests.support.hsm_keys import NOW, Backend, clear

U = KeyUsage
Refs = dict[str, KeyRef]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


TERM = h("001122334455")

# (name, key alias, txn, host time, MAC2, new balance, TAC or None)
ONLINE_VECTORS = [
    (
        "V1",
        "v1/load",
        OnlineTxn(1, 0, 0x1000, 0, h("11223344"), TERM, h("2988AE5A")),
        datetime(2011, 12, 21, 21, 48, 22),
        h("3A845BF0"),
    ),
    (
        "V4",
        "v4/load",
        OnlineTxn(2, 0, 0x2000, 0, h("C903814D"), TERM, h("03976C22")),
        datetime(2016, 12, 16, 10, 58, 0),
        h("8AFA5718"),
    ),
]

# (name, key alias, record, rnd, offline ctr, MAC1, MAC2)
PURCHASE_VECTORS = [
    (
        "V2",
        "v1/purchase",
        PurchaseRecord(6, 0x1000, TERM, 1, datetime(2012, 2, 29, 13, 51, 0)),
        h("11223344"),
        0,
        h("F15CAB75"),
        h("56988A13"),
    ),
    (
        "V4",
        "v4/purchase",
        PurchaseRecord(6, 1, TERM, 0, datetime(2016, 12, 16, 13, 46, 0)),
        h("584633C9"),
        0,
        h("D45737C5"),
        h("66B54A6B"),
    ),
]


def path(refs: Refs, alias: str, *factors: bytes) -> CardKeyPath:
    return CardKeyPath(refs[alias], factors)


@pytest.mark.parametrize(("name", "alias", "txn", "host_time", "mac2"), ONLINE_VECTORS)
def test_load_mac1_mac2(
    backend: Backend, name: str, alias: str, txn: OnlineTxn, host_time: datetime, mac2: bytes
) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        key = path(refs, alias)
        assert await hsm.verify_mac1(key, txn) is True
        assert await hsm.generate_mac2(key, txn, host_time) == mac2
        forged = replace(txn, amount_fen=txn.amount_fen + 1)
        assert await hsm.verify_mac1(key, forged) is False
        with pytest.raises(CardNotAuthenticatedError):
            await hsm.generate_mac2(key, forged, host_time)

    backend.run(body)


def test_v4_load_tac(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        txn = ONLINE_VECTORS[1][2]
        when = datetime(2016, 12, 16, 10, 58, 0)
        tac_key = path(refs, "v4/tac")
        assert await hsm.verify_load_tac(tac_key, txn, 0x2000, when, h("FA00066D")) is True
        assert await hsm.verify_load_tac(tac_key, txn, 0x2001, when, h("FA00066D")) is False
        with pytest.raises(KeyUsageError):  # the load key is no TAC key
            await hsm.verify_load_tac(path(refs, "v4/load"), txn, 0x2000, when, h("FA00066D"))

    backend.run(body)


@pytest.mark.parametrize(
    ("name", "alias", "record", "rnd", "ctr", "mac1", "mac2"), PURCHASE_VECTORS
)
def test_purchase_mac1_mac2(
    backend: Backend,
    name: str,
    alias: str,
    record: PurchaseRecord,
    rnd: bytes,
    ctr: int,
    mac1: bytes,
    mac2: bytes,
) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        key = path(refs, alias)
        assert await hsm.generate_purchase_mac1(key, record, rnd, ctr) == mac1
        assert await hsm.verify_purchase_mac2(key, record, rnd, ctr, mac2) is True
        assert await hsm.verify_purchase_mac2(key, record, rnd, ctr + 1, mac2) is False

    backend.run(body)


def test_v4_purchase_tac(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        record = PURCHASE_VECTORS[1][2]
        assert await hsm.verify_purchase_tac(path(refs, "v4/tac"), record, h("8AF270DC"))
        other = replace(record, term_serial=1)
        assert not await hsm.verify_purchase_tac(path(refs, "v4/tac"), other, h("8AF270DC"))

    backend.run(body)


def test_purchase_tacs_in_one_call(backend: Backend) -> None:
    """A window of records in one call: each result is the single call's, in order, whether
    the records share a path object, carry equal ones, or are diversified per card."""

    async def body(hsm: Hsm, refs: Refs) -> None:
        record = PURCHASE_VECTORS[1][2]
        vector = path(refs, "v4/tac")
        other = replace(record, term_serial=1)
        factor = h("1122334455667788")
        card = path(refs, "v4/tac", factor)
        dtk = pboc.diversify(Des(clear("v4/tac")), factor)
        card_tac = mac.pboc_mac(Des(pboc.tac_key(dtk)), pboc.purchase_tac_data(
            other.amount_fen, other.txn_type, other.terminal_id, other.term_serial, other.when
        ))  # fmt: skip
        items = [
            (vector, record, h("8AF270DC")),
            (vector, other, h("8AF270DC")),
            (path(refs, "v4/tac"), record, h("8AF270DC")),
            (card, other, card_tac),
            (card, record, card_tac),
            (path(refs, "v4/tac", factor), other, card_tac),
        ]
        expected = [True, False, True, True, False, True]
        singles = [await hsm.verify_purchase_tac(*item) for item in items]
        assert singles == expected
        assert await hsm.verify_purchase_tacs(items) == expected
        assert await hsm.verify_purchase_tacs([]) == []
        with pytest.raises(KeyUsageError):  # misuse in any item fails the call
            await hsm.verify_purchase_tacs([*items, (path(refs, "v4/load"), record, card_tac)])
        with pytest.raises(InvalidInputError):
            await hsm.verify_purchase_tacs([(vector, replace(record, txn_type=2), card_tac)])

    backend.run(body)


def test_load_key_never_serves_a_purchase(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        record = PURCHASE_VECTORS[1][2]
        with pytest.raises(KeyUsageError):
            await hsm.generate_purchase_mac1(path(refs, "v4/load"), record, h("584633C9"), 0)
        # A reference that lies about the usage is caught by the key block's bound usage.
        lying = CardKeyPath(replace(refs["v4/load"], usage=U.MK_PURCHASE))
        with pytest.raises(KeyUsageError):
            await hsm.generate_purchase_mac1(lying, record, h("584633C9"), 0)
        with pytest.raises(KeyUsageError):  # and an unload key never serves a load
            await hsm.verify_mac1(path(refs, "v4/unload"), ONLINE_VECTORS[1][2])

    backend.run(body)


def test_unload_mac1_mac2_mac3(backend: Backend) -> None:
    dulk = clear("v4/unload")
    when = datetime(2026, 11, 25, 9, 30, 0)
    rnd, ctr = h("0A0B0C0D"), 7
    session = Des(pboc.online_session_key(Des(dulk), rnd, ctr))
    mac1 = mac.pboc_mac(session, pboc.load_mac1_data(5000, 1200, 3, TERM))
    txn = OnlineTxn(3, 5000, 1200, ctr, rnd, TERM, mac1)
    mac3 = mac.pboc_mac(session, pboc.online_result_data(3800, ctr, 1200, 3, TERM, when))

    async def body(hsm: Hsm, refs: Refs) -> None:
        key = path(refs, "v4/unload")
        assert await hsm.verify_mac1(key, txn)
        expected = cardcrypto.mac2(cardcrypto.online_session(Des(dulk), txn), txn, when)
        assert await hsm.generate_mac2(key, txn, when) == expected
        assert await hsm.verify_mac3(key, txn, 3800, when, mac3)
        assert not await hsm.verify_mac3(key, txn, 3801, when, mac3)

    backend.run(body)


def test_v5_diversified_card_key(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        card = path(refs, "v5/load", h("1122334455667788"))
        expected = oracle.kcv(h("496BD7A351364453 3100B54E71196528"))
        assert await hsm.kcv(card) == expected
        two_level = path(refs, "v5/load", h("1122334455667788"), h("0102030405060708"))
        child = pboc.diversify(Des(h("496BD7A351364453 3100B54E71196528")), h("0102030405060708"))
        assert await hsm.kcv(two_level) == oracle.kcv(child)

    backend.run(body)


V7_F62 = h("6701EAD6A9AD51E51AA406E2C27FCFA9 8D0A74B8 B651F9E9BACE9AE1 0000000000000000 AB7153CA")


def test_v7_sign_on_field62(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        keys = await hsm.accept_sign_on(refs["v7/tmk"], V7_F62, "pos/00000001", now=NOW)
        assert keys.pik.kcv == oracle.kcv(h("807A23AD32B36D457AE91FDF927570EA"))
        assert keys.mak.kcv == oracle.kcv(h("5BB5C72CD00B7338"))
        assert keys.tdk is None and keys.field62 == V7_F62
        assert (keys.pik.alias, keys.pik.usage) == ("pos/00000001/PIK", U.PIK)
        with pytest.raises(KcvMismatchError):
            await hsm.accept_sign_on(refs["v7/tmk"], V7_F62[:-1] + b"\0", "pos/2", now=NOW)

    backend.run(body)


@pytest.mark.parametrize("layout", [24, 40, 60])
def test_sign_on_generates_keys_the_terminal_can_read(backend: Backend, layout: int) -> None:
    from hsm import signon

    async def body(hsm: Hsm, refs: Refs) -> None:
        keys = await hsm.sign_on(refs["v7/tmk"], layout, "pos/00000009", now=NOW)
        assert len(keys.field62) == layout
        working = signon.parse_field62(Des(clear("v7/tmk")), keys.field62)  # the terminal
        assert keys.pik.kcv == oracle.kcv(working.pik)
        assert keys.mak.kcv == oracle.kcv(working.mak)
        assert (keys.tdk is None) == (layout != 60)
        mab = b"0800" + bytes(20)
        expected = mac.cup_ecb(Des(working.mak), mab)
        assert await hsm.generate_mac(keys.mak, MacAlgorithm.CUP_ECB, mab) == expected
        again = await hsm.sign_on(refs["v7/tmk"], layout, "pos/00000009", now=NOW)
        assert again.mak.version == keys.mak.version + 1
        if keys.tdk is not None and working.tdk is not None:
            secret = b"bill 42: 3 items"
            sealed = await hsm.encrypt_data(keys.tdk, secret)
            assert Des(working.tdk).decrypt_cbc(sealed)[: len(secret)] == secret
            assert await hsm.decrypt_data(keys.tdk, sealed) == secret

    backend.run(body)


V8_FRAME = h(
    "007F600003000060321032007202003020048000C08015000000000000001234000002030099303030303030"
    "303139353237313831383232313738373531353600192600000100060000000000435F011232383434313233"
    "34353637383930313233345F03063136303033365F04063230303832365C0230314233413039324145"
)


def test_v8_cup_ecb_mac(backend: Backend) -> None:
    mab = V8_FRAME[13:-8]

    async def body(hsm: Hsm, refs: Refs) -> None:
        assert await hsm.generate_mac(refs["v8/mak"], MacAlgorithm.CUP_ECB, mab) == b"B3A092AE"
        assert await hsm.verify_mac(refs["v8/mak"], MacAlgorithm.CUP_ECB, mab, b"B3A092AE")
        assert not await hsm.verify_mac(refs["v8/mak"], MacAlgorithm.CUP_ECB, mab, b"B3A092AF")
        with pytest.raises(KeyUsageError):  # a ZAK does not do the terminal MAC
            await hsm.generate_mac(refs["bank/zak"], MacAlgorithm.CUP_ECB, mab)

    backend.run(body)


def test_bank_macs_match_psec(backend: Backend) -> None:
    data = b"0200 bank link message body \x00\x01\x02"

    async def body(hsm: Hsm, refs: Refs) -> None:
        zak = clear("bank/zak")
        x919 = await hsm.generate_mac(refs["bank/zak"], MacAlgorithm.X9_19, data)
        assert x919 == oracle.retail_mac(zak, data, 1)
        x99 = await hsm.generate_mac(refs["bank/zak"], MacAlgorithm.X9_9, data)
        assert x99 == oracle.cbc_mac(zak, data, 1)
        assert await hsm.verify_mac(refs["bank/zak"], MacAlgorithm.X9_19, data, x919[:4])
        assert not await hsm.verify_mac(refs["bank/zak"], MacAlgorithm.X9_19, data + b"!", x919)

    backend.run(body)


def test_v10_pin_translation(backend: Backend) -> None:
    pan = "5544332211009966"
    v10 = h("041277CDDEEFF669")

    async def body(hsm: Hsm, refs: Refs) -> None:
        under_pik = oracle.tdes_ecb_encrypt(clear("term/pik"), v10)
        under_zpk = await hsm.translate_pin(refs["term/pik"], refs["bank/zpk"], under_pik, pan)
        assert oracle.tdes_ecb_decrypt(clear("bank/zpk"), under_zpk) == v10
        with pytest.raises(KeyUsageError):  # a MAK never touches a PIN
            await hsm.translate_pin(refs["v8/mak"], refs["bank/zpk"], under_pik, pan)
        with pytest.raises(KeyUsageError):  # PINs go to a ZPK, not back to a PIK
            await hsm.translate_pin(refs["bank/zpk"], refs["term/pik"], under_zpk, pan)
        with pytest.raises(PinBlockError):  # wrong PAN: not a valid block
            await hsm.translate_pin(refs["term/pik"], refs["bank/zpk"], under_pik, "1" * 16)

    backend.run(body)


SERIAL = h("0000000000000001 2233")[-8:]


def test_pin_reload_and_unblock(backend: Backend) -> None:
    pan = "6222021234567890123"
    block = oracle.tdes_ecb_encrypt(clear("term/pik"), oracle.pinblock0("654321", pan))
    challenge = h("A1B2C3D4")

    async def body(hsm: Hsm, refs: Refs) -> None:
        reload_key = path(refs, "card/reload", SERIAL)
        drpk = pboc.diversify(Des(clear("card/reload")), SERIAL)
        reload_mac = await hsm.pin_reload_mac(reload_key, refs["term/pik"], block, pan)
        assert reload_mac == mac.pboc_mac(Des(xor(drpk[:8], drpk[8:])), h("654321"))

        unblock = path(refs, "card/unblock", SERIAL)
        dpuk = pboc.diversify(Des(clear("card/unblock")), SERIAL)
        apdu = await hsm.pin_unblock_command(unblock, refs["term/pik"], block, pan, challenge, 2)
        assert apdu[:5] == h("84240200") + bytes([len(apdu) - 5])
        assert pboc.secure_decrypt(Des(dpuk), apdu[5:-4]) == h("654321")
        expected = mac.iso9797_alg3(Des(dpuk[:8]), Des(dpuk), apdu[:-4], padding=2,
                                    iv=challenge + bytes(4))[:4]
        assert apdu[-4:] == expected
        with pytest.raises(KeyUsageError):
            await hsm.pin_reload_mac(unblock, refs["term/pik"], block, pan)

    backend.run(body)


def test_script_mac_application_block(backend: Backend) -> None:
    challenge = h("11223344")
    command = h("841E000004")

    async def body(hsm: Hsm, refs: Refs) -> None:
        key = path(refs, "card/maint", SERIAL)
        damk = pboc.diversify(Des(clear("card/maint")), SERIAL)
        got = await hsm.script_mac(key, challenge, command)
        # CBC under IV x is CBC under a zero IV with x folded into the first block.
        padded = command + h("800000")
        folded = xor(padded, challenge + bytes(4))
        assert got == oracle.retail_mac(damk, folded, 1)[:4]
        with pytest.raises(InvalidInputError):  # not a maintenance command
            await hsm.script_mac(key, challenge, h("8450000004"))
        with pytest.raises(KeyUsageError):
            await hsm.script_mac(path(refs, "card/control", SERIAL), challenge, command)

    backend.run(body)


def test_write_card_key_and_psam_key(backend: Backend) -> None:
    challenge = h("55667788")
    header = h("84D40100")
    attributes = h("3F01000000")

    async def body(hsm: Hsm, refs: Refs) -> None:
        control = path(refs, "card/control", SERIAL)
        apdu = await hsm.write_card_key(
            control, path(refs, "v5/load", SERIAL), challenge, header, attributes
        )
        ck = pboc.diversify(Des(clear("card/control")), SERIAL)
        plain = pboc.secure_decrypt(Des(ck), apdu[5:-4])
        dlk = pboc.diversify(Des(clear("v5/load")), SERIAL)
        assert plain == attributes + dlk
        assert apdu[-4:] == cardcrypto.line_mac(ck, challenge, apdu[:-4])
        with pytest.raises(KeyUsageError):  # a ZPK is no card key
            await hsm.write_card_key(
                control, CardKeyPath(refs["bank/zpk"]), challenge, header, attributes
            )

        transport = path(refs, "psam/transport", h("0102030405060708"))
        psam = await hsm.write_psam_key(
            transport, refs["v1/purchase"], challenge, header, attributes
        )
        tk = pboc.diversify(Des(clear("psam/transport")), h("0102030405060708"))
        written = pboc.secure_decrypt(Des(tk), psam[5:-4])
        assert written == attributes + adjust_parity(clear("v1/purchase"))
        with pytest.raises(KeyUsageError):  # only the purchase key goes into PSAMs
            await hsm.write_psam_key(transport, refs["v1/load"], challenge, header, attributes)

    backend.run(body)


def test_card_data_check_code(backend: Backend) -> None:
    files = b"\x01" * 39 + b"\x02" * 30

    async def body(hsm: Hsm, refs: Refs) -> None:
        key = path(refs, "card/datacheck", SERIAL)
        code = await hsm.card_data_check_code(key, files)
        dck = pboc.diversify(Des(clear("card/datacheck")), SERIAL)
        assert code == oracle.retail_mac(dck, files, 2)[:4]
        assert await hsm.verify_card_data_check_code(key, files, code)
        assert not await hsm.verify_card_data_check_code(key, files[:-1] + b"\x03", code)

    backend.run(body)


def test_generate_import_export_kcv(backend: Backend) -> None:
    async def body(hsm: Hsm, refs: Refs) -> None:
        zmk = clear("bank/zmk")
        assert await hsm.kcv(refs["bank/zmk"]) == oracle.kcv(zmk) == refs["bank/zmk"].kcv
        zpk = await hsm.generate_key("bank1/zpk", U.ZPK, now=NOW)
        assert (zpk.version, zpk.usage) == (1, U.ZPK)
        exported = await hsm.export_key(zpk, refs["bank/zmk"])
        value = oracle.tdes_ecb_decrypt(zmk, exported.encrypted)
        assert oracle.kcv(value) == exported.kcv == zpk.kcv
        imported = await hsm.import_key(
            "bank1/zpk", U.ZPK, refs["bank/zmk"], exported.encrypted, exported.kcv, now=NOW
        )
        assert (imported.version, imported.kcv) == (2, zpk.kcv)
        with pytest.raises(KcvMismatchError):
            await hsm.import_key(
                "bank1/zpk", U.ZPK, refs["bank/zmk"], exported.encrypted, "000000", now=NOW
            )
        with pytest.raises(KeyUsageError):  # a card master key never leaves under a ZMK
            await hsm.export_key(refs["v1/load"], refs["bank/zmk"])
        with pytest.raises(KeyUsageError):  # a PIK travels under a TMK, not a ZMK
            await hsm.export_key(refs["term/pik"], refs["bank/zmk"])
        with pytest.raises(KeyNotFoundError):
            await hsm.kcv(KeyRef("nobody", 1, U.ZPK))
        assert await hsm.diagnostics()

    backend.run(body)


def test_file_key_mac_and_encryption(backend: Backend) -> None:
    batch = b"H|20261125|3\nD|1|100\nD|2|200\nD|3|300\nT|3|600\n"

    async def body(hsm: Hsm, refs: Refs) -> None:
        file_key = refs["bank/file"]
        file_mac = await hsm.generate_mac(file_key, MacAlgorithm.X9_19, batch)
        assert file_mac == oracle.retail_mac(clear("bank/file"), batch, 1)
        sealed = await hsm.encrypt_data(file_key, batch)
        assert batch not in sealed and await hsm.decrypt_data(file_key, sealed) == batch
        with pytest.raises(KeyUsageError):
            await hsm.generate_mac(file_key, MacAlgorithm.CUP_ECB, batch)

    backend.run(body)

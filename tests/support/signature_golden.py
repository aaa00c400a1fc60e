"""specs/card-layout.md's signature traces made by the real code: the centre's HSM (a SoftHsm
under the TEST ONLY LMK holding the spec's TEST ONLY keys) writes the holder signature and a
chained health script into a virtual card with the spec's serial, PIN and challenge, and the
POS (simulators.pos_signatures) reads and checks them. The spec's traces must be these."""

from __future__ import annotations

from typing import NamedTuple

from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import TEST_ONLY_COMPONENTS, TEST_ONLY_LMK_KCV, Component, Lmk
from hsm.soft import SoftHsm
from messages.card_records import HealthData
from messages.card_signatures import PublishedKey
from simulators import pos_signatures
from simulators.card import CardKey, CardState, VirtualCard
from simulators.card.state import EF_HOLDER, KEY_APP_MAINT
from simulators.pos_signatures import SignatureCheck
from switch.card_io import record_book
from switch.card_io.connection import DirectConnection
from switch.card_io.personalize import CardMasterKeys, write_holder_signature
from tests.support.daemon import now
from tests.support.spec_examples import examples, key_table

SPEC = "card-layout.md"
SELECT = bytes.fromhex("00A4040006D15600000503")


class Recorder(DirectConnection):
    """A direct connection that keeps every command and answer (data ‖ SW)."""

    def __init__(self, card: VirtualCard) -> None:
        super().__init__(card, "golden")
        self.steps: list[tuple[bytes, bytes]] = []

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw = super().transmit(apdu)
        self.steps.append((apdu, data + sw.to_bytes(2, "big")))
        return data, sw


class Golden(NamedTuple):
    write: list[tuple[bytes, bytes]]  # personalisation's holder signature, the health script
    read: list[tuple[bytes, bytes]]  # the POS reading and checking
    holder: SignatureCheck
    health: SignatureCheck


def values() -> dict[str, str]:
    return key_table(examples(SPEC)["signature-values"])


def published() -> PublishedKey:
    return PublishedKey(1, examples(SPEC)["test-only-card-sign-public"].encode())


def health_data() -> HealthData:
    v = values()
    return HealthData(v["blood"], (v["allergies"],), (v["implants"],), v["phone"], 1,
                      tuple(v["chronic"].split(",")), v["by"], v["at"])  # fmt: skip


async def make() -> Golden:
    v = values()
    hsm = SoftHsm(Lmk([Component.parse(c) for c in TEST_ONLY_COMPONENTS], TEST_ONLY_LMK_KCV),
                  MemoryKeyStore())  # fmt: skip
    record = await hsm.form_key("card/MK_RECORD", KeyUsage.MK_RECORD,
                                [Component.parse(v["MK_RECORD"])], now=now())  # fmt: skip
    check = await hsm.form_key("centre/DATA_CHECK", KeyUsage.DATA_CHECK,
                               [Component.parse(v["DATA_CHECK"])], now=now())  # fmt: skip
    private = examples(SPEC)["test-only-card-sign-private"].encode()
    signing = await hsm.import_signing_key("centre/CARD_SIGN", private, now=now())
    keys = _keys(check, record, signing)
    serial, holder = bytes.fromhex(v["serial"]), bytes.fromhex(v["holder"])
    state = CardState.blank(serial, bytes(16), pin=bytes.fromhex(v["PIN"]))
    drk = bytes.fromhex(v["DRK"])
    state.keys[(KEY_APP_MAINT, 2)] = CardKey(KEY_APP_MAINT, 2, 1, 0, drk)
    state.binary[EF_HOLDER] = holder
    challenges = [bytes.fromhex(v["challenge"]), bytes.fromhex(v["health challenge"])]
    card = VirtualCard(state, random_bytes=lambda n: challenges.pop(0))
    writer = Recorder(card)
    writer.connect()
    writer.transmit(SELECT)
    await write_holder_signature(writer, hsm, keys, serial, holder)
    await record_book.write_health(writer, hsm, keys, serial, health_data())
    writer.disconnect()

    reader = Recorder(card)
    reader.connect()
    reader.transmit(SELECT)
    holder_check = pos_signatures.check_holder(reader, [published()])
    reader.transmit(bytes.fromhex("00B203DC80"))  # the health signature: PIN first
    reader.transmit(bytes.fromhex("0020000003") + bytes.fromhex(v["PIN"]))
    raw, _ = reader.transmit(bytes.fromhex("00B0990060"))
    health_check = pos_signatures.check_health(reader, [published()], raw)
    await hsm.close()
    return Golden(writer.steps, reader.steps, holder_check, health_check)


def _keys(check: KeyRef, record: KeyRef, signing: KeyRef) -> CardMasterKeys:
    """Only the data check, record and signing keys take part; the others are never used."""
    return CardMasterKeys(control=check, load=check, purchase=check, tac=check, unload=check,
                          pin_reload=check, pin_unblock=check, app_maint=check,
                          data_check=check, record=record, signing=signing)  # fmt: skip


def trace_text(steps: list[tuple[bytes, bytes]]) -> str:
    return "".join(f"> {c.hex().upper()}\n< {r.hex().upper()}\n" for c, r in steps)

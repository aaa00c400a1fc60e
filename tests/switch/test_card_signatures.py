"""The centre's signatures on the card (issue 24 item 5, specs/card-layout.md "Signatures"):
personalisation signs the holder data, the health script signs the health data, and a POS
holding only the published public key tells genuine data from altered ones, offline; an old
card still verifies after the key's rotation. The spec's golden traces are what the real code
writes and reads."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from hsm.errors import InvalidInputError
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from messages.card_records import DONOR_YES, HealthData
from messages.card_signatures import PublishedKey
from messages.private import BillData
from simulators import pos_records, pos_signatures, terminal_card
from simulators.pos_signatures import Verdict
from switch.card_io import record_book
from switch.card_io.connection import DirectConnection
from switch.card_io.signatures import SIGNING_ALIAS
from tests.support import signature_golden
from tests.support.card_book import blank_book_card, book_keys, personalise_book_card
from tests.support.daemon import Daemon, new_hsm, now, run
from tests.support.kiosk import PIN
from tests.support.on_file import first_card
from tests.support.spec_examples import examples

HEALTH = HealthData("B+", ("PCN",), (), "13900139000", DONOR_YES, ("I10",), "H002",
                    "20261207101500")  # fmt: skip


def test_the_specs_golden_traces_are_what_the_code_writes_and_reads() -> None:
    made = asyncio.run(signature_golden.make())
    spec = examples("card-layout.md")
    assert signature_golden.trace_text(made.write) == spec["signature-write"]
    assert signature_golden.trace_text(made.read) == spec["signature-read"]
    # The 0230 carrying the health script (field 63 before the TDK): the real codec's frame.
    health = [command for command, _ in made.write[-3:]]
    script = b"".join(bytes([len(command)]) + command for command in health)
    built = BillData(bill_id="9054CA9CBE34A38E", health_script=script).build()
    assert built == bytes.fromhex("".join(spec["signed-health-field-sixty-three"].split()))
    assert made.holder.line("holder data") == "holder data signed by the centre (key v1)"
    assert made.health.line("health data") == "health data signed by the centre (key v1)"


def test_an_hsm_of_its_own_refuses_the_published_test_only_signing_key() -> None:
    async def main() -> None:
        store = MemoryKeyStore()
        hsm = new_hsm(store)  # an LMK of its own: not the TEST ONLY one
        private = examples("card-layout.md")["test-only-card-sign-private"].encode()
        with pytest.raises(InvalidInputError, match="TEST ONLY signing key is refused"):
            await hsm.import_signing_key(SIGNING_ALIAS, private, now=now())
        assert await store.list(SIGNING_ALIAS) == []
        await hsm.close()

    asyncio.run(main())


def test_the_pos_checks_holder_and_health_signatures_offline(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        bundle = await book_keys(daemon)
        keys = bundle.keys
        assert keys.signing is not None
        published = [PublishedKey(1, await daemon.hsm.public_key(keys.signing))]
        device = blank_book_card(bundle, on_file)
        card = DirectConnection(device)
        card.connect()
        await personalise_book_card(daemon, card, bundle, on_file)
        serial = device.state.serial

        expect_holder = "holder data signed by the centre (key v1)"
        terminal_card.open_application(card, PIN)
        assert pos_records.book_lines(card, published)[-1] == expect_holder  # no health yet
        assert pos_records.book_lines(card)[-1] == (
            "holder data NOT signed by the centre (no published key of the centre configured)"
        )

        await record_book.write_health(card, daemon.hsm, keys, serial, HEALTH)
        terminal_card.open_application(card, PIN)
        lines = pos_records.book_lines(card, published)
        assert lines[-2:] == [expect_holder, "health data signed by the centre (key v1)"]

        # Altered on the chip, bypassing the card's access rules: both show as not signed.
        holder = device.state.binary[0x16]
        device.state.binary[0x16] = holder[:2] + "李四".encode("gbk") + holder[6:]
        health = device.state.binary[0x19]
        device.state.binary[0x19] = health[:1] + b"O- " + health[4:]
        terminal_card.open_application(card, PIN)
        assert pos_records.book_lines(card, published)[-2:] == [
            "holder data NOT signed by the centre (the signature does not verify)",
            "health data NOT signed by the centre (the signature does not verify)",
        ]
        device.state.binary[0x16], device.state.binary[0x19] = holder, health

        # A genuine signature copied from another card does not verify: the serial is signed.
        other = blank_book_card(bundle, first_card(daemon.home / "medswitch.db", 1))
        other.state.binary[0x16] = holder
        other.state.signatures[:2] = device.state.signatures[:2]
        copied = DirectConnection(other)
        copied.connect()
        copied.transmit(signature_golden.SELECT)  # the holder's part needs no PIN
        assert pos_signatures.check_holder(copied, published).verdict is Verdict.BAD_SIGNATURE

        # The key rotates: new data are signed with v2, the old card verifies with v1.
        v2 = await daemon.hsm.generate_key(SIGNING_ALIAS, KeyUsage.CARD_SIGN, now=now())
        assert v2.version == 2
        both = [*published, PublishedKey(2, await daemon.hsm.public_key(v2))]
        assert pos_signatures.check_holder(card, both).version == 1
        assert pos_signatures.check_holder(card, both[1:]).verdict is Verdict.BAD_SIGNATURE
        await record_book.write_health(card, daemon.hsm, replace(keys, signing=v2), serial,
                                       HEALTH)  # fmt: skip
        terminal_card.open_application(card, PIN)
        raw = card.transmit(bytes.fromhex("00B0990060"))[0]
        assert pos_signatures.check_health(card, both, raw).version == 2

    run(tmp_path, scenario)


def test_a_card_personalised_without_the_signing_key_shows_unsigned(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        bundle = await book_keys(daemon, signing=False)
        signing = await daemon.hsm.generate_key(SIGNING_ALIAS, KeyUsage.CARD_SIGN, now=now())
        published = [PublishedKey(signing.version, await daemon.hsm.public_key(signing))]
        device = blank_book_card(bundle, on_file)
        card = DirectConnection(device)
        card.connect()
        await personalise_book_card(daemon, card, bundle, on_file)
        await record_book.write_health(card, daemon.hsm, bundle.keys, device.state.serial,
                                       HEALTH)  # fmt: skip
        terminal_card.open_application(card, PIN)
        assert pos_records.book_lines(card, published)[-2:] == [
            "holder data NOT signed by the centre (no signature on the card)",
            "health data NOT signed by the centre (no signature on the card)",
        ]

    run(tmp_path, scenario)

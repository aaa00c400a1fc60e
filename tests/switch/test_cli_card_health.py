"""Initial health data at issuance (issue 24 item 3, specs/key-ceremony.md "Card issuance batch"),
through `medswitch cards issue --health | approve | personalize` on virtual cards: a file that
does not fit is refused naming its line and field, nothing written; the data given are kept
sealed in ``card_health`` and carried in the batch; the personalised card holds them in EF 0019
with the centre's data check code (read after VERIFY) and signature, and its record key DRK takes
a visit script; the centre's copy is then no longer pending. A batch whose health fields do not
fit is refused naming the line."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from hsm.keys import CardKeyPath
from hsm.pboc import card_factor
from messages.card_records import DONOR_YES, HealthData, Visit, append_visit_command
from messages.card_signatures import PublishedKey
from simulators import pos_records, terminal_card
from simulators.card import VirtualCard
from simulators.card.factory import blank_card
from switch.card_io import issuance
from switch.card_io.connection import DirectConnection, expect
from switch.card_io.personalize import GET_CHALLENGE, SELECT_APP
from switch.card_io.signatures import SIGNING_ALIAS
from switch.demo.keys import custodian_files
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.card_issuance import NOW, cli, deployment

__all__ = ["deployment"]  # the fixture

GIVEN = {
    "cardholder_id": "P0000001", "blood_type": "AB-", "organ_donor": "donor",
    "emergency_phone": "13800138000", "allergies": ["PCN"], "implants": ["PM"],
    "chronic_conditions": ["E11.9", "I10"],
}  # fmt: skip


def lines(*bodies: Any) -> str:
    return "".join(json.dumps(b) + "\n" for b in bodies)


def health_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as sql:
        return sql.execute(
            "SELECT person_id, updated_by, pending, sealed FROM card_health"
        ).fetchall()


def test_health_data_given_at_issuance_reach_the_card(deployment: dict[str, Any]) -> None:
    d = deployment
    out, health = d["tmp"] / "batches", d["tmp"] / "health.jsonl"
    assert cli(d, "cards", "alice", "factory-keys").exit_code == 0

    # Refused, naming the line and the field; nothing issued, nothing kept.
    for text, said in (
        (lines(GIVEN, {"cardholder_id": "P0000002", "blood_type": "C+"}), "line 2: blood_type:"),
        (lines({"cardholder_id": "P0000002", "chronic_conditions": ["E11.9"] * 5}),
         "line 1: chronic_conditions: at most 4 ICD-10 codes"),
        ("\n" + lines({"cardholder_id": "P0000009"}), "line 2: cardholder_id: P0000009 gets no"),
        (lines(GIVEN, GIVEN), "line 2: cardholder_id: P0000001 again (line 1)"),
        (lines({"cardholder_id": "P0000002", "allergy": ["PCN"]}), "line 1: allergy: unknown"),
        ("{\n", "line 1: not a JSON object"),
    ):  # fmt: skip
        health.write_text(text)
        refused = cli(d, "cards", "alice", "issue", "--out", str(out), "--now", NOW,
                      "--health", str(health))  # fmt: skip
        assert refused.exit_code != 0 and said in refused.output, refused.output
    assert not out.exists() and health_rows(d["db"]) == []

    health.write_text(lines(GIVEN))
    issued = cli(d, "cards", "alice", "issue", "--out", str(out), "--now", NOW,
                 "--health", str(health))  # fmt: skip
    assert issued.exit_code == 0, issued.output
    audited = [json.loads(line) for line in (d["home"] / "audit.jsonl").read_text().splitlines()]
    (issue,) = [a for a in audited if a["what"] == "cards.issue"]
    assert issue["signed_by"] == "centre/CARD_SIGN v1"  # which key signed this batch's cards
    ((person, by, pending, sealed),) = health_rows(d["db"])
    assert (person, by, bool(pending)) == ("P0000001", "centre", True)
    assert b"E119" not in bytes(sealed) and b"AB-" not in bytes(sealed)
    (batch,) = sorted(out.glob("*.bat"))
    assert cli(d, "cards", "bob", "approve", str(batch)).exit_code == 0

    serials = [bytes.fromhex(f"3101{n:012d}").rjust(10, b"\0") for n in (1, 2, 3)]
    cards = {f"r{i}": VirtualCard(blank_card(s)) for i, s in enumerate(serials, 1)}
    readers = [a for r in cards for a in ("--reader", r)]
    done = cli(d, "cards", "carol", "personalize", str(batch), *readers, readers=cards)
    assert done.exit_code == 0 and "3 personalised, 0 failed" in done.output, done.output
    assert [bool(row[2]) for row in health_rows(d["db"])] == [False]  # written: not pending

    hsm = open_soft_hsm(d["home"], component_files_of(custodian_files(d["home"])))
    home = Home(d["home"], "test")

    async def checked() -> None:
        data_check = await resolve(home, "centre/DATA_CHECK")
        record_key = await resolve(home, "card/MK_RECORD")
        factor = (card_factor(serials[0]),)
        first = DirectConnection(cards["r1"])
        first.connect()
        expect(first, SELECT_APP, "SELECT")
        emergency = pos_records.emergency(first)  # the emergency block: no PIN
        assert emergency is not None and emergency.blood_type == "AB-"
        terminal_card.open_application(first, "123456")
        on_card = pos_records.health(first)
        expected = HealthData("AB-", ("PCN",), ("PM",), "13800138000", DONOR_YES,
                              ("E11.9", "I10"), "centre", "20261125100000")  # fmt: skip
        assert on_card == expected
        whole = expect(first, bytes.fromhex("00B0990060"), "READ 0019")
        assert await hsm.verify_card_data_check_code(
            CardKeyPath(data_check, factor), whole[:92], whole[92:]
        )
        # The DRK is on the card: the centre's visit script is accepted.
        visit = Visit("20261125", "hosp1", "IM", ("J45.9",), "00" * 8, 100, 0, 100, 0)
        command = append_visit_command(visit)
        challenge = expect(first, GET_CHALLENGE, "GET CHALLENGE")
        mac = await hsm.script_mac(CardKeyPath(record_key, factor), challenge, command)
        expect(first, command + mac, "APPEND RECORD")
        assert pos_records.recent_visits(first) == [visit]
        # The holder and health data carry the centre's signature (centre/CARD_SIGN, which the
        # demo makes), checked with the key the centre publishes.
        published = PublishedKey(1, await hsm.public_key(await resolve(home, SIGNING_ALIAS)))
        assert pos_records.book_lines(first, [published])[-2:] == [
            "holder data signed by the centre (key v1)",
            "health data signed by the centre (key v1)",
        ]
        second = DirectConnection(cards["r2"])
        second.connect()
        terminal_card.open_application(second, "123456")
        assert pos_records.health(second) is None  # none given: the file is never written

    asyncio.run(checked())


def test_a_batch_whose_health_fields_do_not_fit_is_refused(deployment: dict[str, Any]) -> None:
    home = deployment["home"]
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))
    key = asyncio.run(resolve(Home(home, "t"), "cards/file"))
    (record,) = issuance.plan([("P1", "张三", "110101199001011234")], first_sequence=1,
                              bin_prefix="621098", issued=date(2026, 11, 25))  # fmt: skip
    bad = replace(record, health=HealthData("C+", (), (), "", 0, (), "centre", "20261125100000"))
    batch = issuance.Batch("b1", datetime(2026, 11, 25), "alice", 1, (record, bad))
    data = asyncio.run(issuance.seal(hsm, key, batch))
    with pytest.raises(issuance.BatchError, match="line 3: blood type: one of A"):
        asyncio.run(issuance.open_batch(hsm, key, data))


def test_a_batch_whose_signature_fields_do_not_fit_is_refused(
    deployment: dict[str, Any],
) -> None:
    """Lines of 9 and 17 fields (no signing key) still read; 12 and 20 carry the signatures
    back as sealed; a signature that is not 512 upper-case hex digits, a version out of range,
    a health signature without health data (or none with them) refuse the batch, naming the
    line."""
    home = deployment["home"]
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))
    key = asyncio.run(resolve(Home(home, "t"), "cards/file"))
    (record,) = issuance.plan([("P1", "张三", "110101199001011234")], first_sequence=1,
                              bin_prefix="621098", issued=date(2026, 11, 25))  # fmt: skip
    health = HealthData("B-", (), (), "", 0, ("I10",), "centre", "20261125100000")
    signed = issuance.BatchSignatures(1, bytes(range(256)), bytes(reversed(range(256))))
    good = (record, replace(record, health=health),
            replace(record, signed=replace(signed, health=None)),
            replace(record, health=health, signed=signed))  # fmt: skip

    def opened(*records: issuance.IssuanceRecord) -> issuance.Batch:
        batch = issuance.Batch("b1", datetime(2026, 11, 25), "alice", 1, records)
        sealed = asyncio.run(issuance.seal(hsm, key, batch))
        return asyncio.run(issuance.open_batch(hsm, key, sealed))

    assert [len(r.encode().split("|")) for r in good] == [9, 17, 12, 20]
    assert opened(*good).records == good
    for bad, why in (
        (replace(record, signed=signed), "health signature: given exactly when"),
        (replace(record, health=health, signed=replace(signed, health=None)), "health sig"),
        (replace(record, signed=replace(signed, version=256, health=None)),
         "signing key version: 1 to 255"),
        (replace(record, signed=replace(signed, holder=bytes(255), health=None)),
         "holder signature: 512 upper-case hex digits"),
    ):
        with pytest.raises(issuance.BatchError, match=f"line 3: {why}"):
            opened(record, bad)

"""The bank's and the centre's zone key changes as a contract (specs/bank-interface.md, F48
in "Private fields", "Key exchange"): a bank host written from the spec alone (`bank_keys.py`:
keys under the ZMK by two-key triple-DES ECB, their KCVs, F48's items) against `medswitch
run`'s daemon — the overriding banks' deployment of `test_bank_dialects.py`, whose
`key-change` bank has a ZMK and a 1 s key overlap. The bank changes its keys toward the
centre (0800 F70 101 on its link, MACed under the current ZAK); a key custodian runs
`medswitch bank key-change` and the bank takes the centre's offer; after each, MACs and PINs
under the new keys serve and, past the overlap, a MAC under the old ZAK is A0. Plus the
spec's golden key change. Imports nothing of medswitch."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.contract import pboc
from tests.contract.bank_banks import OVERLAP_S, PIN, Banks, card_for, metric, sign_on_counter
from tests.contract.bank_codec import Dialect, decode, mac_verifies, pin_block
from tests.contract.bank_keys import ORDER, answered, kcv, offer, take
from tests.contract.counter import custodian_login, load_at_counter, medswitch, odd_parity_key

EXAMPLES = json.loads(
    (Path(__file__).resolve().parents[2] / "specs" / "examples" / "frames.json").read_text()
)


def test_the_bank_changes_its_keys_toward_the_centre(overriding_banks: Banks) -> None:
    """Spec: F48, "Key exchange": the bank's 0800 F70 101 on its link, MACed under the current
    ZAK, offers new keys under the ZMK; unsigned it is refused A0, with a KCV that does not
    match or without a ZAK 89 (nothing changes: the old ZAK still verifies past the overlap).
    Taken: the reply (MACed under the old ZAK) echoes the KCVs, the new ZAK and ZPK serve, and
    after the overlap a MAC under the old ZAK is A0."""
    banks, bank = overriding_banks, overriding_banks.banks["key-change"]
    counter = sign_on_counter(bank)
    try:
        old = counter.zak
        fresh = {usage: odd_parity_key() for usage in ORDER}
        field48 = offer(bank.keys["ZMK"], fresh)
        assert len(field48) == 132  # the spec's 3 items of 43, 43 and 44 characters
        change = {70: "101", 48: field48}
        assert counter.exchange("0800", change, mac=False).fields[39] == "A0"
        wrong = field48.replace(f"/{kcv(fresh['ZPK'])}", "/000000")
        assert wrong != field48
        assert counter.exchange("0800", {70: "101", 48: wrong}).fields[39] == "89"
        no_zak = offer(bank.keys["ZMK"], {"ZPK": fresh["ZPK"]})
        assert counter.exchange("0800", {70: "101", 48: no_zak}).fields[39] == "89"
        time.sleep(OVERLAP_S + 0.5)  # had a refused change taken a key, the old ZAK would fail
        assert counter.exchange("0800", {70: "301"}).fields[39] == "00"  # still the ZAK

        reply = counter.exchange("0800", change)  # its F128 checked under the old ZAK
        assert reply.fields[39] == "00"
        assert answered(reply.text(48)) == {usage: kcv(key) for usage, key in fresh.items()}
        counter.zak = bank.keys["ZAK"] = fresh["ZAK"]
        bank.keys["ZPK"] = fresh["ZPK"]
        assert counter.exchange("0800", {70: "301"}).fields[39] == "00"
        ep, pan = card_for(banks, bank, pboc.EP)
        block = pin_block(PIN, pan, fresh["ZPK"])  # the counter's PIN pad: the new ZPK
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00"

        time.sleep(OVERLAP_S + 0.5)  # past the overlap: the old ZAK no longer verifies
        inquiry = {2: pan, 3: "310000"}
        assert counter.exchange("0200", inquiry, zak=old).fields[39] == "A0"
        assert counter.exchange("0200", inquiry).fields[39] == "00"
    finally:
        counter.close()


def test_the_centre_changes_its_keys_toward_the_bank(overriding_banks: Banks) -> None:
    """Spec: "Key exchange": `medswitch bank key-change --bank ID` by a logged-in key
    custodian; the centre's 0800 F70 101 (F48 under the ZMK, MACed under the current ZAK) is
    taken by the bank from the spec; then the centre MACs under the new ZAK and sends PINs
    under the new ZPK, and after the overlap the bank's MAC under the old ZAK is A0."""
    banks, bank = overriding_banks, overriding_banks.banks["key-change"]
    issuer = bank.issuer
    labels = {"bank": bank.bank_id, "connection": "outbound"}
    for _ in range(100):  # bounded: the centre signs on when the daemon starts
        if metric(banks, "medswitch_bank_signed_on", **labels) == 1:
            break
        time.sleep(0.2)
    old = issuer.zak
    custodian_login(banks.deployment.home)
    out = medswitch(banks.deployment.home, "bank", "key-change", "--bank", bank.bank_id)
    taken = issuer.changes.get(timeout=15)
    assert out.strip() == f"bank {bank.bank_id}: keys changed, new ZAK KCV {kcv(taken.keys['ZAK'])}"
    sent = issuer.next_request("08")
    while sent.fields.get(70) != "101":  # bounded by the queue: the sign-on came first
        sent = issuer.next_request("08")
    assert set(ORDER) == set(taken.keys) and len(sent.text(48)) == 132
    assert mac_verifies(bank.dialect, old, sent)  # under the key it replaces
    bank.keys["out/ZAK"], bank.keys["out/ZPK"] = taken.keys["ZAK"], taken.keys["ZPK"]

    counter = sign_on_counter(bank)
    try:
        ep, pan = card_for(banks, bank, pboc.EP)
        block = pin_block(PIN, pan, bank.keys["ZPK"])
        code, _ = load_at_counter(counter, ep, pan, "601000", {52: block})
        assert code == "00"  # the bank found the PIN under the new ZPK and answered
    finally:
        counter.close()
    debit = issuer.next_request("02")
    assert mac_verifies(bank.dialect, taken.keys["ZAK"], debit)
    assert not mac_verifies(bank.dialect, old, debit)
    time.sleep(OVERLAP_S + 0.5)
    assert issuer.request("0800", {70: "301"}, zak=old).fields[39] == "A0"
    assert issuer.request("0800", {70: "301"}, mac=True).fields[39] == "00"


def test_the_golden_key_change_reads_from_the_spec() -> None:
    """bank_dialects.key_change: the centre's 0800 F70 101 in the `medswitch` preset, MACed
    under the golden ZAK; its F48 gives the new keys under the golden ZMK, each KCV right."""
    golden = EXAMPLES["bank_dialects"]
    example = golden["key_change"]
    dialect = Dialect.of(example["preset"])
    raw = bytes.fromhex(example["frame"])
    assert int(raw[:4]) == len(raw) - 4
    msg = decode(dialect, raw[4:])
    assert (msg.mti, msg.fields[70], msg.fields[32]) == ("0800", "101", "09990000")
    assert mac_verifies(dialect, bytes.fromhex(golden["zak"]), msg)
    field48 = msg.text(48)
    assert len(field48) == 132 and [item.split("=")[0] for item in field48.split(";")] == [
        "ZAK", "ZPK", "FILE"]
    offered = take(bytes.fromhex(example["zmk"]), field48)
    clear = {usage: bytes.fromhex(key) for usage, key in example["new_keys"].items()}
    assert offered.keys == clear
    assert offered.kcvs == {usage: kcv(key) for usage, key in clear.items()}

"""The terminal interface as a contract: a vendor's POS and kiosk, written from
specs/terminal-interface.md, specs/his-api.yaml and the PBOC reference only (frames with
pyiso8583, cryptography with `cryptography`, a PBOC card model of its own), drive `make run`'s
daemon with the sandbox's TEST ONLY keys and cards:

kiosk sign-on → ED load (MAC1 → MAC2) → load confirmation (TAC) → HIS bill → POS sign-on →
settlement 0200 (field 63 under the TDK) → card debit → debit advice 0220 (TAC) → batch upload
0320 → end of upload → batch settlement 0500. Every reply's MAC, response code and the split
are checked. This suite imports nothing of medswitch (a test below reads its own imports)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.contract import pboc
from tests.contract.daemon import Deployment, running
from tests.contract.pos import CENTRE_ZONE, Terminal, card_datetime, his_submit
from tests.contract.wire import decrypt_63, encrypt_63, parse_tlv, tlv, uint

KIOSK_TERMINAL_NO = bytes.fromhex("000000000001")  # spec: kiosk K0000001's own number
LOAD_FEN = 20_000
HERE = Path(__file__).resolve().parent
OURS = ("messages", "hsm", "routing", "ledger", "switch", "simulators", "tests.support")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(tmp_path_factory.mktemp("contract")) as found:
        yield found


def test_sign_on_bill_settlement_debit_advice_upload_batch(deployment: Deployment) -> None:
    listing: Any = deployment.listing()
    assert "TEST ONLY" in listing["test_only"]
    pos = next(t for t in listing["terminals"] if t["kind"] == "pos")
    kiosk = next(t for t in listing["terminals"] if t["kind"] == "kiosk")
    entry = listing["cards"][1]
    card = pboc.Card.from_image(deployment.sandbox / entry["image"])
    assert card.app_serial.hex().upper().lstrip("0") == entry["application_serial"].lstrip("0")
    pan = entry["card_no"]

    # -- the kiosk fills the ED from the personal fund --------------------------------------
    k = Terminal(deployment.terminal_port, kiosk["terminal_id"], kiosk["institution"],
                 deployment.tmk(kiosk["terminal_id"]))
    k.sign_on()
    init = card.initialize_for_load(LOAD_FEN, KIOSK_TERMINAL_NO)
    load = {1: card.app_serial, 2: bytes([pboc.ED]), 3: bytes([init.key_version]),
            4: bytes([init.algorithm_id]), 5: init.card_random, 7: uint(init.online_counter, 2),
            9: uint(init.old_balance_fen, 4), 10: uint(LOAD_FEN, 4), 12: init.mac1,
            16: KIOSK_TERMINAL_NO}
    money = {2: pan, 3: "600000", 4: f"{LOAD_FEN:012d}", 25: "91"}
    reply = k.send("0200", {**money, 58: tlv(load)}, "45")
    answer = parse_tlv(bytes.fromhex(reply.fields[58]))
    tac = card.credit_for_load(answer[0x12], answer[0x0D])  # the card checks MAC2
    confirm = {**load, 0x0F: tac, 0x13: uint(card.balance_fen, 4)}
    k.send("0220", {**money, 58: tlv(confirm)}, "45")
    k.link.close()

    # -- the HIS bill, the POS settles it, the card pays the personal share -----------------
    bill = his_submit(deployment, pos["institution"], pan)
    split = bill["split"]
    total = split["total_fen"]
    personal = split["personal_account_fen"]
    assert personal + split["pooled_fen"] + split["self_pay_fen"] == total
    assert 0 < personal <= card.balance_fen
    p = Terminal(deployment.terminal_port, pos["terminal_id"], pos["institution"],
                 deployment.tmk(pos["terminal_id"]))
    p.sign_on()
    assert p.keys is not None
    bill_id = bill["bill_id"].encode()
    request_63 = encrypt_63(p.keys.tdk, bytes.fromhex(tlv({1: bill_id, 2: uint(total, 4)})))
    settle_58 = tlv({1: card.app_serial, 2: bytes([pboc.ED]), 9: uint(card.balance_fen, 4)})
    reply = p.send("0200", {2: pan, 3: "000000", 4: f"{total:012d}", 25: "00", 58: settle_58,
                            63: request_63}, "22")
    answered = parse_tlv(decrypt_63(p.keys.tdk, reply.fields[63]))
    assert answered[1] == bill_id
    assert int.from_bytes(answered[3], "big") == personal
    assert int.from_bytes(answered[4], "big") == split["pooled_fen"]
    assert int.from_bytes(answered[5], "big") == split["self_pay_fen"]

    psam_terminal = bytes.fromhex(pos["psam_terminal_no"])
    when = card_datetime(datetime.now(CENTRE_ZONE))
    debit = card.debit_for_purchase(personal, psam_terminal, 1, when)
    record = tlv({1: card.app_serial, 2: bytes([pboc.ED]), 3: bytes([card.key_version]),
                  4: bytes([0]), 8: uint(debit.offline_counter, 2), 10: uint(personal, 4),
                  11: bytes([pboc.TYPE_ED_PURCHASE]), 16: psam_terminal, 17: uint(1, 4),
                  18: when, 15: debit.tac})
    paid = {2: pan, 3: "000000", 4: f"{personal:012d}", 25: "00", 58: record,
            63: encrypt_63(p.keys.tdk, bytes.fromhex(tlv({1: bill_id})))}
    p.send("0220", paid, "30")

    # -- the batch: upload the record, end of upload, settlement ----------------------------
    p.send("0320", paid, "30", network="201")
    p.send("0320", {48: "0001"}, "00", network="207")
    totals = f"{personal:012d}001" + "0" * 15 + "0"
    reply = p.send("0500", {48: totals + "0" * 31}, "00", network="201")
    assert reply.fields[48][:30] == totals[:30] and reply.fields[48][30] == "1", "not balanced"
    p.link.close()


def test_the_reference_vectors_hold_for_the_card_model() -> None:
    """The model's primitives against the reference's worked vectors V1 and V5."""
    load_key = bytes.fromhex("11223344556677888877665544332211")
    key = pboc.session_key(load_key, bytes.fromhex("1122334400008000"))
    assert key.hex().upper() == "9B1D924E05595603"
    data = bytes.fromhex("00000000" "00001000" "01" "001122334455")
    assert pboc.pboc_mac(key, data).hex().upper() == "2988AE5A"
    child = pboc.diversify(bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
                           bytes.fromhex("00001122334455667788"))
    assert child.hex().upper() == "496BD7A351364453" "3100B54E71196528"


def test_the_suite_imports_nothing_of_medswitch() -> None:
    for path in HERE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == o or name.startswith(o + ".") for o in OURS), (path, name)

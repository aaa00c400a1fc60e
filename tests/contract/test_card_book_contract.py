"""The card's health data at its next contact and the consent read, as a vendor meets them from
specs/terminal-interface.md, specs/card-layout.md and specs/his-api.yaml alone, against `make
run`'s daemon (sandbox, TEST ONLY keys): a hospital's HIS sends health data (202 pending); the
HIS may not read the card's book yet (403 consent_required); the POS settles with the card's
health file in field 63 (tag 10) and a visit file the centre did not write (tag 12: answered as
ever), closes the bill in cash with the card's challenge in field
58, and the 0230 carries field 63 `health_script` (tag 0F, chained): the signature's records
then one UPDATE BINARY of EF 0019 (`04 D6 99 00 64`) holding the data sent, made for that
challenge; the same 0220 again gets the same 0230; the hospital's HIS now reads the book (200,
pending, with the signature the script wrote), another institution's may not. Imports nothing
of medswitch."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract import pboc
from tests.contract.daemon import Deployment, running
from tests.contract.pos import Terminal, his_submit
from tests.contract.wire import decrypt_63, encrypt_63, parse_tlv, tlv

HEALTH = {"blood_type": "B+", "allergies": ["PCN"], "chronic_conditions": ["E11.9"]}
CHALLENGE = bytes.fromhex("0A0B0C0D")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(tmp_path_factory.mktemp("book")) as found:
        yield found


def his(deployment: Deployment, institution: str, method: str, path: str,
        body: Any = None) -> tuple[int, Any]:  # fmt: skip
    token = base64.b64encode(f"{institution}:{deployment.his_token(institution)}".encode())
    headers = {"Authorization": f"Basic {token.decode()}"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{deployment.http_port}/his/v1{path}",
                                     data=data, headers=headers, method=method)  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_health_data_reach_the_pos_in_the_0230_and_the_book_opens_with_consent(
    deployment: Deployment,
) -> None:
    listing: Any = deployment.listing()
    pos = next(t for t in listing["terminals"] if t["kind"] == "pos")
    hospital = pos["institution"]
    entry = listing["cards"][2]
    card = pboc.Card.from_image(deployment.sandbox / entry["image"])
    pan = entry["card_no"]
    credentials = (deployment.home / "his-credentials.txt").read_text().splitlines()
    users = [line.split()[0] for line in credentials if len(line.split()) == 2]
    other = next(user for user in users if not user.startswith("#") and user != hospital)

    status, answer = his(deployment, hospital, "PUT", f"/cards/{pan}/health", HEALTH)
    assert status == 202 and answer["status"] == "pending", answer
    status, answer = his(deployment, hospital, "GET", f"/cards/{pan}/book")
    assert (status, answer["error"]["code"]) == (403, "consent_required"), answer

    bill = his_submit(deployment, hospital, pan, bill_no="BOOK-CONTRACT-1")
    total, personal = bill["split"]["total_fen"], bill["split"]["personal_account_fen"]
    p = Terminal(deployment.terminal_port, pos["terminal_id"], hospital,
                 deployment.tmk(pos["terminal_id"]))  # fmt: skip
    p.sign_on()
    assert p.keys is not None
    bill_id = bill["bill_id"].encode()
    never_written = bytes(96)  # the card's EF 0019 as read after VERIFY: never written
    # The card's visit file (tag 12) names a record the centre never wrote: the centre reviews
    # the card (card_visit_mismatch), the settlement is answered as ever.
    visit_file = bytes.fromhex("9054CA9CBE34A38EF0BB9019E7778CB4")  # card-layout.md's golden
    book = {1: bill_id, 0x10: never_written, 0x12: visit_file}
    asked = encrypt_63(p.keys.tdk, bytes.fromhex(tlv(book)))
    settle = {2: pan, 3: "000000", 4: f"{total:012d}", 25: "00",
              58: tlv({1: card.app_serial}), 63: asked}  # fmt: skip
    p.send("0200", settle, "22")

    # The cash close of the personal share, with the card's challenge: the 0230 brings the script.
    close = {2: pan, 3: "000000", 4: f"{personal:012d}", 25: "00", 58: tlv({6: CHALLENGE}),
             63: encrypt_63(p.keys.tdk, bytes.fromhex(tlv({1: bill_id})))}  # fmt: skip
    reply = p.send("0220", close, "22")
    answered = parse_tlv(decrypt_63(p.keys.tdk, reply.fields[63]))
    assert answered[1] == bill_id
    script, commands = answered[0x0F], []
    while script:  # each command as 1-byte length ‖ command
        commands.append(script[1 : 1 + script[0]])
        assert len(commands[-1]) == script[0]
        script = script[1 + script[0] :]
    # The centre signs the health data (the demo holds centre/CARD_SIGN): the signature's two
    # records of EF 001B first, chained (CLA 14), then EF 0019 (CLA 04) — 382 bytes in all, so
    # field 63 carries the script in two chained elements of tag 0F.
    assert [c[:5].hex().upper() for c in commands] == ["14DC03DC84", "14DC04DC84", "04D6990064"]
    assert [len(c) for c in commands] == [5 + 128 + 4, 5 + 128 + 4, 5 + 96 + 4]
    command = commands[-1]
    data = command[5:97]
    assert data[0] == 1 and data[1:4] == b"B+ " and data[13:33].rstrip() == b"PCN"
    assert data[48:54] == b"E119  " and data[72:80] == hospital.encode().ljust(8)

    # The same 0220 again (same STAN, same content): the same 0230, byte for byte.
    p.stan -= 1
    again = p.send("0220", close, "22")
    assert again.fields[63] == reply.fields[63]
    p.link.close()

    # The consent window is open for this hospital only.
    status, answer = his(deployment, hospital, "GET", f"/cards/{pan}/book")
    assert status == 200, answer
    assert answer["health"]["blood_type"] == "B+" and answer["health"]["pending"] is True
    assert answer["health"]["chronic_conditions"] == ["E11.9"]
    assert answer["card_no"] != pan and isinstance(answer["visits"], list)
    # With the centre's signature (his-api.yaml HealthSignature): the health message of
    # card-layout.md "Signatures" over the data the 0230 brought, signed as EF 001B gets it.
    signed = answer["health"]["signed"]
    message, version = bytes.fromhex(signed["message"]), signed["key_version"]
    assert message == b"MEDSWITCH HEALTH" + bytes([version]) + card.app_serial + data
    signature = bytes.fromhex(signed["signature"])
    assert signature == commands[0][5:133] + commands[1][5:133]
    status, answer = his(deployment, other, "GET", f"/cards/{pan}/book")
    assert (status, answer["error"]["code"]) == (403, "consent_required"), answer

"""The golden frames of specs/examples/, read from the spec alone: every frame decodes field by
field with the spec's table, is the transaction the spec's table says (MTI, F3, F25, 60.1,
60.3), carries a MAC that verifies under the working keys its sign-on delivered (their check
values verified under the published TEST ONLY TMK), and its cryptograms hold: field 63 under the
TDK, the card's MAC1, the centre's MAC2, the card's TACs from the published card master keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract import pboc
from tests.contract.wire import (
    Frame,
    WorkingKeys,
    check_mac,
    decode,
    decrypt_63,
    parse_tlv,
    sign_on_keys,
)

SPECS = Path(__file__).resolve().parents[2] / "specs"
GOLDEN: dict[str, Any] = json.loads((SPECS / "examples" / "frames.json").read_text())
FRAMES = GOLDEN["frames"]
MASTER = {"load": "MK_LOAD", "tac": "MK_TAC"}


def spec_table() -> dict[str, tuple[str, str, str, str, str]]:
    """transaction → (MTI pair, F3, F25, 60.1, 60.3) from the spec's transaction table."""
    text = (SPECS / "terminal-interface.md").read_text()
    rows = {}
    for line in text.splitlines():
        found = re.match(r"\| (\w+): .*? \| (\d{4}/\d{4}) \| ([\d—]+) \| ([\d—]+) \| (\d\d) \| "
                         r"(\d{3}) \|", line)
        if found:
            name, *rest = found.groups()
            rows[name] = tuple(rest)
    return rows  # type: ignore[return-value]


def card_key(usage: str, serial: bytes) -> bytes:
    master = bytes.fromhex(GOLDEN["card_master_keys"][MASTER[usage]])
    return pboc.diversify(master, serial)


def tac_key(serial: bytes) -> bytes:
    dtk = card_key("tac", serial)
    return bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:], strict=True))


def decoded() -> list[tuple[dict[str, str], Frame, Frame]]:
    return [(f, decode(bytes.fromhex(f["request"])), decode(bytes.fromhex(f["reply"])))
            for f in FRAMES]


def test_the_golden_frames_are_test_only_and_cover_the_table() -> None:
    assert "TEST ONLY" in GOLDEN["test_only"]
    names = {f["transaction"] for f in FRAMES}
    assert {"sign_on", "echo", "balance_inquiry", "settlement", "debit_advice", "batch_upload",
            "batch_upload_end", "batch_settlement", "ed_load", "ed_load_confirm"} <= names


@pytest.mark.parametrize("index", range(len(FRAMES)),
                         ids=[f"{i}-{f['transaction']}" for i, f in enumerate(FRAMES)])
def test_each_frame_is_its_transaction_of_the_spec_table(index: int) -> None:
    frame, request, reply = decoded()[index]
    mtis, f3, f25, type_code, network = spec_table()[frame["transaction"]]
    assert f"{request.mti}/{reply.mti}" == mtis
    assert request.fields.get(3, "—") == f3 and request.fields.get(25, "—") == f25
    assert request.fields[60][:2] == type_code and request.fields[60][8:11] == network
    assert request.fields[41] == frame["terminal"] and len(request.fields[42]) == 15
    assert reply.fields[39] == "00"
    for echoed in (11, 41, 42):
        assert reply.fields[echoed] == request.fields[echoed]
    assert len(reply.fields[12]) == 6 and len(reply.fields[13]) == 4
    clock = GOLDEN["clock"]  # the centre's clock, in its zone: hhmmss, MMDD
    assert reply.fields[12] == clock[11:19].replace(":", "")
    assert reply.fields[13] == clock[5:10].replace("-", "")


def test_macs_and_cryptograms_verify() -> None:
    keys: dict[str, WorkingKeys] = {}
    batches: dict[str, str] = {}
    checked: list[str] = []
    for frame, request, reply in decoded():
        terminal = frame["terminal"]
        name = frame["transaction"]
        if name == "sign_on":
            assert 64 not in request.fields  # no MAK yet
            tmk = bytes.fromhex(GOLDEN["tmk"][terminal])
            keys[terminal] = sign_on_keys(tmk, reply.fields[62])
            batches[terminal] = reply.fields[60][2:8]
            check_mac(reply, keys[terminal].mak)
            checked.append(name)
            continue
        mak, tdk = keys[terminal].mak, keys[terminal].tdk
        check_mac(request, mak)
        check_mac(reply, mak)
        assert request.fields[60][2:8] == batches[terminal], "the batch of the sign-on"
        card = parse_tlv(bytes.fromhex(request.fields.get(58, "")))
        if name == "ed_load":
            serial = card[1]
            dlk = card_key("load", serial)
            session = pboc.session_key(dlk, card[5] + card[7] + b"\x80\x00")
            assert card[5].hex().upper() == GOLDEN["card_random"]
            assert card[0x10].hex().upper() == GOLDEN["kiosk_terminal_number"]
            tail = card[10] + b"\x01" + card[0x10]
            assert pboc.pboc_mac(session, card[9] + tail) == card[0x0C], "MAC1"
            answer = parse_tlv(bytes.fromhex(reply.fields[58]))
            assert pboc.pboc_mac(session, tail + answer[0x12]) == answer[0x0D], "MAC2"
            load_datetime = answer[0x12]
        elif name == "ed_load_confirm":
            data = card[0x13] + card[7] + card[10] + b"\x01" + card[0x10] + load_datetime
            assert pboc.pboc_mac(tac_key(card[1]), data) == card[0x0F], "load TAC"
        elif name in ("debit_advice", "batch_upload"):
            assert int(request.fields[4]) == int.from_bytes(card[10], "big")
            data = card[10] + card[11] + card[0x10] + card[0x11] + card[0x12]
            assert pboc.pboc_mac(tac_key(card[1]), data) == card[0x0F], "purchase TAC"
            bill = parse_tlv(decrypt_63(tdk, request.fields[63]))
            assert bill[1].decode().isalnum()
        elif name == "settlement":
            bill = parse_tlv(decrypt_63(tdk, request.fields[63]))
            assert int.from_bytes(bill[2], "big") == int(request.fields[4])  # F4 = bill total
            split = parse_tlv(decrypt_63(tdk, reply.fields[63]))
            shares = sum(int.from_bytes(split[t], "big") for t in (3, 4, 5))
            assert split[1] == bill[1] and shares == int(request.fields[4])
        elif name == "batch_settlement":
            assert reply.fields[48][:30] == request.fields[48][:30]
            assert reply.fields[48][30] == "1", "balanced"
        checked.append(name)
    assert len(checked) == len(FRAMES)

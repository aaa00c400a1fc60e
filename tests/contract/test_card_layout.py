"""The card's record book from specs/card-layout.md alone: the record key diversified from
MK_RECORD, the script MAC over the golden APPEND RECORD for the golden challenge, the visit
record decoded with the spec's table into the worked example's values, and the read record's
`card_visit_file` entry. Imports nothing of ours but the contract suite's own DES helpers."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.contract.wire import decrypt_63, des, parse_tlv, tdes_ecb

SPEC = Path(__file__).resolve().parents[2] / "specs" / "card-layout.md"


def spec() -> str:
    return SPEC.read_text(encoding="utf-8")


def golden(name: str) -> bytes:
    found = re.search(rf"^\| {re.escape(name)} \| `([0-9A-F]+)` \|$", spec(), re.MULTILINE)
    assert found, name
    return bytes.fromhex(found.group(1))


def traces() -> list[list[tuple[str, bytes]]]:
    """The APDU traces: the fenced blocks without a language (```text blocks are values)."""
    blocks = [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", spec(), re.DOTALL)
              if not lang]  # fmt: skip
    out = []
    for block in blocks:
        steps = [(line[0], bytes.fromhex(line[2:])) for line in block.splitlines() if line]
        out.append(steps)
    return out


def diversify(master: bytes, serial: bytes) -> bytes:
    factor = serial[-8:]
    return tdes_ecb(master, factor) + tdes_ecb(master, bytes(b ^ 0xFF for b in factor))


def script_mac(key: bytes, challenge: bytes, command: bytes) -> bytes:
    """Alg 3: single-DES CBC under the left half with IV = challenge || 0000 0000, the last
    block through 3DES; padding method 2 always."""
    padded = command + b"\x80" + bytes((-len(command) - 1) % 8)
    chain = challenge + bytes(4)
    blocks = [padded[i : i + 8] for i in range(0, len(padded), 8)]
    for block in blocks[:-1]:
        chain = des(key[:8], bytes(a ^ b for a, b in zip(chain, block, strict=True)))
    last = bytes(a ^ b for a, b in zip(chain, blocks[-1], strict=True))
    return tdes_ecb(key, last)[:4]


def test_the_record_key_is_diversified_from_mk_record_by_the_serial() -> None:
    assert diversify(golden("MK_RECORD"), golden("application serial")) == golden("DRK")


def test_the_golden_write_carries_the_mac_of_its_challenge_and_a_replay_is_6984() -> None:
    write = traces()[0]
    assert write[2] == (">", bytes.fromhex("0084000004"))
    assert write[3] == ("<", golden("challenge") + bytes.fromhex("9000"))
    script = write[4][1]
    assert script[:5] == bytes.fromhex("04E200D04C") and len(script) == 5 + 72 + 4
    assert script_mac(golden("DRK"), golden("challenge"), script[:-4]) == script[-4:]
    assert write[5] == ("<", bytes.fromhex("9000"))
    assert write[6] == (">", script) and write[7] == ("<", bytes.fromhex("6984"))
    wrong = script_mac(golden("DRK"), bytes.fromhex("00000000"), script[:-4])
    assert wrong != script[-4:]  # the MAC is bound to the challenge


def test_the_golden_read_needs_the_pin_and_returns_the_record_as_the_table_says() -> None:
    read = traces()[1]
    assert read[0] == (">", bytes.fromhex("00B201D448")) and read[1] == ("<", b"\x69\x82")
    assert read[2][1] == bytes.fromhex("0020000003") + golden("PIN")
    record, sw = read[5][1][:-2], read[5][1][-2:]
    assert sw == b"\x90\x00" and record == traces()[0][4][1][5:-4]
    assert record[0] == 1 and record[1:5].hex() == "20261207"
    assert record[5:13] == b"H001    " and record[13:21] == b"IM      "
    codes = [record[i : i + 6].decode().rstrip() for i in range(21, 45, 6)]
    assert codes == ["J459", "I10", "", ""]
    assert record[45:53].hex().upper() == "9054CA9CBE34A38E"
    amounts = [int.from_bytes(record[i : i + 4], "big") for i in range(53, 69, 4)]
    assert amounts == [12000, 3000, 8000, 1000] and sum(amounts[1:]) == amounts[0]
    assert record[69:] == bytes(3)
    assert read[7] == ("<", bytes.fromhex("6A83"))
    # field 63 card_visit_file (tag 12) for this one-record file: bill id ‖ SHA-256[:8]
    assert golden("card_visit_file") == record[45:53] + hashlib.sha256(record).digest()[:8]


def test_the_golden_health_update_is_the_centres_and_its_file_reads_as_the_table_says() -> None:
    """The UPDATE BINARY of the 0230's health_script: its data check code under the data check
    key (DATA_CHECK diversified by the serial), its MAC for the health challenge; then the
    emergency block without the PIN and the whole file after it."""
    check_key = diversify(golden("DATA_CHECK"), golden("application serial"))
    assert check_key == golden("data check key")
    trace = traces()[2]
    assert trace[3] == ("<", golden("health challenge") + bytes.fromhex("9000"))
    script = trace[4][1]
    assert script[:5] == bytes.fromhex("04D6990064") and len(script) == 5 + 96 + 4
    assert script_mac(golden("DRK"), golden("health challenge"), script[:-4]) == script[-4:]
    data, code = script[5:97], script[97:101]
    assert script_mac(check_key, bytes(4), data) == code  # alg 3, zero IV
    assert trace[5] == ("<", bytes.fromhex("9000"))
    assert trace[7] == ("<", data[:48] + bytes.fromhex("9000"))  # the emergency block, no PIN
    assert trace[9] == ("<", bytes.fromhex("6982"))
    assert trace[13] == ("<", data + code + bytes.fromhex("9000"))
    assert data[0] == 1 and data[1:4] == b"O+ " and data[4] == 1
    assert data[5:13].hex().upper().rstrip("F") == "13800138000"
    assert data[13:33].rstrip() == b"PCN" and data[33:48].rstrip() == b"PM"
    assert data[48:54] == b"E119  " and data[54:72] == b" " * 18
    assert data[72:80] == b"H001    " and data[80:87].hex() == "20261207093000"
    assert data[87:92] == bytes(5)


def test_the_golden_0230_carries_the_script_as_length_and_command() -> None:
    """Field 63 of the 0230 under the worked example's TDK: bill_id, then health_script (tag
    0F) = the command's 1-byte length and the command of the golden trace."""
    text = " ".join(spec().split())
    found = re.search(r"\(`([0-9A-F]{32})`\): `([0-9A-F]+)`", text)
    assert found, "the 0230's field 63 example"
    elements = parse_tlv(decrypt_63(bytes.fromhex(found.group(1)), found.group(2)))
    assert elements[0x01] == b"9054CA9CBE34A38E"
    command = traces()[2][4][1]
    assert elements[0x0F] == bytes([len(command)]) + command

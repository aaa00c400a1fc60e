"""The centre's signatures and chained scripts from specs/card-layout.md alone ("Multi-command
scripts", "Signatures", the TEST ONLY golden traces): every command MAC of the two chained
scripts recomputed with IV challenge ‖ i, the health data's check code, the health file decoded
with the spec's table, and both signatures verified with the published public key over the
messages built byte by byte as the spec says — and refused when one byte changes. Imports
nothing of ours but the contract suite's own DES helpers; RSA through `cryptography`."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.contract.wire import des, parse_tlv, tdes_ecb

SPEC = Path(__file__).resolve().parents[2] / "specs" / "card-layout.md"


def example(name: str) -> str:
    text = SPEC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- example: {name} -->\n```[a-z]*\n(.*?)```\n", text, re.DOTALL)
    assert found, name
    return found.group(1)


def values() -> dict[str, str]:
    return {
        w[0] if len(w) == 2 else " ".join(w[:-1]): w[-1]
        for w in (line.split() for line in example("signature-values").splitlines())
    }


def trace(name: str) -> list[tuple[bytes, bytes]]:
    lines = [line for line in example(name).splitlines() if line]
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    assert all(c.startswith("> ") and r.startswith("< ") for c, r in pairs)
    return [(bytes.fromhex(c[2:]), bytes.fromhex(r[2:])) for c, r in pairs]


def v(name: str) -> bytes:
    return bytes.fromhex(values()[name])


def diversify(master: bytes, serial: bytes) -> bytes:
    factor = serial[-8:]
    return tdes_ecb(master, factor) + tdes_ecb(master, bytes(b ^ 0xFF for b in factor))


def mac3(key: bytes, iv: bytes, data: bytes) -> bytes:
    """ISO 9797-1 alg 3, padding method 2: single-DES CBC under the left half from IV, the last
    block through 3DES; the first 4 bytes."""
    padded = data + b"\x80" + bytes((-len(data) - 1) % 8)
    chain = iv
    blocks = [padded[i : i + 8] for i in range(0, len(padded), 8)]
    for block in blocks[:-1]:
        chain = des(key[:8], bytes(a ^ b for a, b in zip(chain, block, strict=True)))
    return tdes_ecb(key, bytes(a ^ b for a, b in zip(chain, blocks[-1], strict=True)))[:4]


def public_key() -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(example("test-only-card-sign-public").encode())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    return key


def verifies(message: bytes, signature: bytes) -> bool:
    try:
        public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def scripts() -> list[tuple[bytes, list[bytes]]]:
    """(challenge, its script's commands) for each GET CHALLENGE of the write trace."""
    out: list[tuple[bytes, list[bytes]]] = []
    for command, answer in trace("signature-write"):
        if command == bytes.fromhex("0084000004"):
            out.append((answer[:-2], []))
        elif command[1] in (0xDC, 0xD6):
            assert answer == b"\x90\x00"
            out[-1][1].append(command)
    return out


def test_each_command_of_a_chained_script_is_maced_with_its_number() -> None:
    drk = diversify(v("MK_RECORD"), v("serial"))
    assert drk == v("DRK")
    (holder_challenge, holder), (health_challenge, health) = scripts()
    assert (holder_challenge, health_challenge) == (v("challenge"), v("health challenge"))
    assert [c[:4].hex().upper() for c in holder] == ["14DC01DC", "04DC02DC"]
    assert [c[:4].hex().upper() for c in health] == ["14DC03DC", "14DC04DC", "04D69900"]
    for challenge, commands in ((holder_challenge, holder), (health_challenge, health)):
        for i, command in enumerate(commands):
            assert command[4] == len(command) - 5  # Lc counts the data and the MAC
            assert mac3(drk, challenge + i.to_bytes(4, "big"), command[:-4]) == command[-4:]
            other = (i + 1).to_bytes(4, "big")
            assert mac3(drk, challenge + other, command[:-4]) != command[-4:]


def test_the_signed_0230_carries_the_health_script_in_two_chained_elements() -> None:
    """The 0230's field 63 (before its encryption): bill_id, then tag 0F as 255 bytes and the
    rest, joined by the reader into the script: each command as 1-byte length ‖ command."""
    plain = bytes.fromhex("".join(example("signed-health-field-sixty-three").split()))
    assert plain[:18] == bytes([0x01, 16]) + b"9054CA9CBE34A38E"
    assert plain[18:20] == bytes([0x0F, 255]) and plain[275:277] == bytes([0x0F, 127])
    assert len(plain) == 277 + 127
    health = scripts()[1][1]
    assert parse_tlv(plain) == {
        0x01: b"9054CA9CBE34A38E",
        0x0F: b"".join(bytes([len(command)]) + command for command in health),
    }


def test_the_health_file_is_the_values_with_its_data_check_code() -> None:
    file = scripts()[1][1][2][5:-4]
    assert len(file) == 96 and file[0] == 0x01
    assert file[1:4] == values()["blood"].encode().ljust(3) and file[4] == 0x01
    assert file[5:13].hex().upper() == values()["phone"].ljust(16, "F")
    assert file[13:33] == values()["allergies"].encode().ljust(20)
    assert file[33:48] == values()["implants"].encode().ljust(15)
    chronic = b"".join(c.replace(".", "").encode().ljust(6) for c in values()["chronic"].split(","))
    assert file[48:72] == chronic.ljust(24)
    assert file[72:80] == values()["by"].encode().ljust(8) and file[87:92] == bytes(5)
    assert file[80:87].hex() == values()["at"]
    data_check = diversify(v("DATA_CHECK"), v("serial"))
    assert mac3(data_check, bytes(8), file[:92]) == file[92:]


def test_both_signatures_verify_with_the_published_key_over_the_specs_messages() -> None:
    read = trace("signature-read")
    answers = {command.hex().upper(): answer for command, answer in read}
    holder = answers["00B0960027"]
    assert holder[-2:] == b"\x90\x00" and holder[:-2] == v("holder")
    holder_signature = answers["00B201DC80"][:-2] + answers["00B202DC80"][:-2]
    health_signature = b"".join(a[:-2] for c, a in read[-3:-1])
    assert [c.hex().upper() for c, _ in read[-3:-1]] == ["00B203DC80", "00B204DC80"]
    assert answers["0020000003" + values()["PIN"]] == b"\x90\x00"
    first_health_read = next(a for c, a in read if c.hex().upper() == "00B203DC80")
    assert first_health_read == b"\x69\x82"  # before VERIFY
    ef0019 = answers["00B0990060"][:-2]
    serial, version = v("serial"), bytes([int(values()["key version"])])
    holder_message = b"MEDSWITCH HOLDER" + version + serial + v("holder")
    health_message = b"MEDSWITCH HEALTH" + version + serial + ef0019[:92]
    assert len(holder_message) == 66 and len(health_message) == 119
    assert verifies(holder_message, holder_signature)
    assert verifies(health_message, health_signature)
    # the signatures the card holds are the ones the scripts wrote
    holder_script, health_script = scripts()[0][1], scripts()[1][1]
    assert holder_signature == holder_script[0][5:-4] + holder_script[1][5:-4]
    assert health_signature == health_script[0][5:-4] + health_script[1][5:-4]
    # one byte changed — in the data, the serial, the version or the domain — does not verify
    assert not verifies(holder_message[:-1] + b"\x01", holder_signature)
    assert not verifies(holder_message[:17] + bytes(10) + holder_message[27:], holder_signature)
    assert not verifies(holder_message[:16] + b"\x02" + holder_message[17:], holder_signature)
    assert not verifies(b"MEDSWITCH HEALTH" + holder_message[16:], holder_signature)


def test_the_test_only_private_key_is_the_published_public_keys() -> None:
    private = serialization.load_pem_private_key(
        example("test-only-card-sign-private").encode(), password=None
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.public_key().public_numbers() == public_key().public_numbers()

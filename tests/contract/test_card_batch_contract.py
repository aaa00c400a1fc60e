"""specs/key-ceremony.md, "Card issuance batch", from the spec alone (a bureau's side): two demo
cards are replaced; `medswitch cards issue --health FILE` names one cardholder in its health file;
the bureau receives the batch's file key under its transport key (TR-31, with `psec`), decrypts
the batch, checks its MAC and reads its lines as the spec lays them out — the health data given
for the one, the centre's copy of the sandbox's demo health data for the other — and checks the
centre's signatures each line carries with the published public key (`cryptography`), over the
EF 0016 and EF 0019 bytes it builds from the line as the spec says; one byte changed and they
do not verify. A health file that does not fit is refused naming its line and field. Only
`medswitch` is run; nothing of the project is imported."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from psec import tr31

from tests.contract import files
from tests.contract.centre import Centre, demo

GIVEN = {
    "blood_type": "AB-", "organ_donor": "not_donor", "emergency_phone": "13900139000",
    "allergies": ["PCN", "SUL"], "implants": ["PM"], "chronic_conditions": ["E11.9"],
}  # fmt: skip


def lmk(centre: Centre) -> list[str]:
    return ["-c", str(centre.component("a")), "-c", str(centre.component("b"))]


def bureau_file_key(centre: Centre, media: Path) -> bytes:
    """The bureau's transport key formed from two custodians' components at both ends, the
    file key exported under it as the spec's rule batch-key-to-bureau says, unwrapped."""
    parts = [media / "bureau.erin", media / "bureau.frank"]
    for part in parts:
        centre.run("keys", "component", "--custodian", part.suffix[1:], "--out", str(part))
    centre.run("keys", "form", "bureau/acme", "--usage", "BUREAU_KEK",
               *[a for p in parts for a in ("-k", str(p))], *lmk(centre))  # fmt: skip
    centre.run("keys", "rotate", "cards/file", "--exportable", *lmk(centre))
    export = media / "bureau.keys"
    centre.run("keys", "export", "cards/file", "--kek", "bureau/acme", "--form", "tr31",
               "--out", str(export), *lmk(centre))  # fmt: skip
    kek = files.from_components(*[p.read_text().split("\n")[0].replace(" ", "") for p in parts])
    line = export.read_text(encoding="ascii").split("\n")[2]
    _, unwrapped = tr31.unwrap(kek, line.split(" ")[-1])
    return bytes(unwrapped)


def test_a_card_batch_carries_health_data_as_the_spec_lays_them_out(tmp_path: Path) -> None:
    centre = demo(tmp_path / "home")
    media = tmp_path / "media"
    media.mkdir()
    listing = json.loads((centre.home / "sandbox" / "terminals.json").read_text())
    kept, given = listing["cards"][0], listing["cards"][1]  # the first has the demo's health
    for card in (kept, given):
        centre.run("cards", "replace", card["card_no"], "--reason", "lost")
    key = bureau_file_key(centre, media)

    health = media / "health.jsonl"
    out = media / "batches"
    issue = ("cards", *lmk(centre), "issue", "--out", str(out), "--health", str(health))
    health.write_text(
        json.dumps({"cardholder_id": given["cardholder_id"], **GIVEN})
        + "\n"
        + json.dumps({"cardholder_id": kept["cardholder_id"], "organ_donor": "maybe"})
        + "\n"
    )
    refused = centre.run(*issue, ok=False)
    assert "line 2: organ_donor:" in refused.out, refused.out
    assert not out.exists()
    health.write_text(json.dumps({"cardholder_id": given["cardholder_id"], **GIVEN}) + "\n")
    centre.run(*issue)

    (batch,) = out.glob("cards-*.bat")
    plain = files.decrypt(key, batch.read_bytes()).decode("utf-8")
    assert plain.endswith("\n")
    lines = plain[:-1].split("\n")
    header, *records, trailer = [line.split("|") for line in lines]
    assert header[:3] == ["H", "MEDSWITCH-CARDS", "1"] and len(header) == 7
    body = plain[: len(plain) - len(lines[-1]) - 1].encode("utf-8")
    assert trailer == ["T", str(len(records)), files.x919(key, body)]
    by_holder = {record[4]: record for record in records}
    assert set(by_holder) == {given["cardholder_id"], kept["cardholder_id"]}
    for record in records:
        assert record[0] == "D" and len(record) == 20, record
    # blood type | donor | phone | allergies | implants | chronic | updated by | updated at
    assert by_holder[given["cardholder_id"]][9:16] == [
        "AB-", "2", "13900139000", "PCN,SUL", "PM", "E11.9", "centre",
    ]  # fmt: skip
    assert by_holder[kept["cardholder_id"]][9:16] == ["A+", "1", "13800138000", "PCN", "", "I10",
                                                     "centre"]  # fmt: skip
    for record in records:
        assert len(record[16]) == 14 and record[16].isdigit()

    # The centre's signatures (centre/CARD_SIGN v1 of the sandbox), checked with its public key.
    pem = media / "centre-card-sign-v1.pem"
    centre.run("keys", "public-key", "centre/CARD_SIGN", "--out", str(pem), *lmk(centre))
    key = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    for record in records:
        version, holder_signature, health_signature = record[17:20]
        assert version == "1" and len(holder_signature) == len(health_signature) == 512
        serial = bytes(2) + bytes.fromhex(record[3])  # EF 0015 bytes 10-19
        holder = b"MEDSWITCH HOLDER" + bytes([1]) + serial + ef0016(record[5], record[6])
        health = b"MEDSWITCH HEALTH" + bytes([1]) + serial + ef0019(record[9:17])
        assert (len(holder), len(health)) == (66, 119)
        assert verifies(key, holder, bytes.fromhex(holder_signature))
        assert verifies(key, health, bytes.fromhex(health_signature))
        assert not verifies(key, holder[:-1] + b"\x01", bytes.fromhex(holder_signature))
        assert not verifies(key, health, bytes.fromhex(holder_signature))


def verifies(key: rsa.RSAPublicKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def ef0016(name: str, id_no: str) -> bytes:
    """39 bytes: 00 00, the name in GBK padded with 00 to 20, the ID number in BCD (X as A)
    padded with F to 16 bytes, 00."""
    packed = bytes.fromhex(id_no.upper().replace("X", "A").ljust(32, "F"))
    return bytes(2) + name.encode("gbk").ljust(20, b"\0") + packed + bytes(1)


def ef0019(fields: list[str]) -> bytes:
    """EF 0019 bytes 0-91 (card-layout.md) from a line's eight health fields."""
    blood, donor, phone, allergies, implants, chronic, by, at = fields
    codes = [code.replace(".", "").ljust(6) for code in chronic.split(",") if code]
    text = (blood.ljust(3).encode("ascii"), allergies.ljust(20).encode("ascii"),
            implants.ljust(15).encode("ascii"), "".join(codes).ljust(24).encode("ascii"))
    data = (b"\x01" + text[0] + bytes([int(donor)]) + bytes.fromhex(phone.ljust(16, "F"))
            + text[1] + text[2] + text[3] + by.ljust(8).encode("ascii") + bytes.fromhex(at)
            + bytes(5))  # fmt: skip
    assert len(data) == 92
    return data

"""The card data signing key's ceremony (specs/key-ceremony.md "Card data signing key") through
`medswitch keys`: generated inside the HSM, never exportable, its public key published as PEM
(what a POS takes as `--card-sign-key`), rotated with the old version still published; nothing
the centre wrote holds the private key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from simulators.pos_signatures import load_published_key
from tests.support.ceremony import Ceremony

SPEC = Path(__file__).parents[2] / "specs" / "key-ceremony.md"


def fingerprint(pem: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(
        load_pem_public_key(pem).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return digest.finalize()[:3].hex().upper()


def test_generate_publish_rotate(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    c = Ceremony(tmp_path / "home", media)
    c.lmk_files = [c.component("alice", "lmk.alice"), c.component("bob", "lmk.bob")]
    c.keys("lmk-form", "--new", *[a for f in c.lmk_files for a in ("-c", str(f))])

    generated = c.documented("medswitch keys generate centre/CARD_SIGN --usage CARD_SIGN "
                             "-c lmk.alice -c lmk.bob", SPEC)  # fmt: skip
    assert generated.exit_code == 0, generated.output
    refused = c.keys("generate", "centre/CARD_SIGN", "--usage", "CARD_SIGN", "--exportable",
                     ok=False)  # fmt: skip
    assert "not exportable" in refused.output
    published = c.documented("medswitch keys public-key centre/CARD_SIGN --out "
                             "centre-card-sign-v1.pem -c lmk.alice -c lmk.bob", SPEC)  # fmt: skip
    assert published.exit_code == 0, published.output
    pem = (media / "centre-card-sign-v1.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    listed = c.keys("list", "--alias", "centre/CARD_SIGN").output.split("\t")
    assert listed[:3] == ["centre/CARD_SIGN", "CARD_SIGN", "v1"] and listed[3] == fingerprint(pem)
    assert f"centre/CARD_SIGN v1 CARD_SIGN fingerprint {fingerprint(pem)}" in published.output
    assert load_published_key(f"1:{media / 'centre-card-sign-v1.pem'}").pem == pem

    c.keys("generate", "bureau/acme", "--usage", "BUREAU_KEK")
    export = c.keys("export", "centre/CARD_SIGN", "--kek", "bureau/acme", "--form", "tr31",
                    "--out", str(media / "x.keys"), ok=False)  # fmt: skip
    assert "stays-in-hsm" in export.output
    again = c.keys("public-key", "centre/CARD_SIGN", "--out",
                   str(media / "centre-card-sign-v1.pem"), ok=False)  # fmt: skip
    assert "exists" in again.output
    not_signing = c.keys("public-key", "bureau/acme", ok=False)
    assert "only a CARD_SIGN key has a public key" in not_signing.output

    c.keys("rotate", "centre/CARD_SIGN")
    v2 = c.keys("public-key", "centre/CARD_SIGN").stdout.encode()
    v1 = c.keys("public-key", "centre/CARD_SIGN:1").stdout.encode()
    assert v1 == pem and v2 != pem and v2.startswith(b"-----BEGIN PUBLIC KEY-----")

    for written in (c.home / "keys.jsonl", c.home / "audit.jsonl"):
        text = written.read_text()
        assert "PRIVATE KEY" not in text and "BEGIN" not in text
    assert '"key.public-key"' in (c.home / "audit.jsonl").read_text()


@pytest.mark.parametrize("spec, message", [
    ("centre.pem", "VERSION:FILE"),
    ("0:centre.pem", "VERSION:FILE"),
    ("1:missing.pem", "No such file"),
    ("1:not-a-key.pem", "not a PEM public key"),
])  # fmt: skip
def test_a_pos_refuses_what_is_not_a_published_key(
    tmp_path: Path, spec: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-key.pem").write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_published_key(spec)

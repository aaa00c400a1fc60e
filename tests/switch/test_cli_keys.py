"""A whole key ceremony through the CLI from a clean directory: components → LMK → TMK →
sign-on keys, with every KCV confirmed by psec, and no key value anywhere in what it wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner, Result

from switch.cli import main
from tests.support import psec_oracle as oracle


def clear_of(component_file: Path) -> bytes:
    return bytes.fromhex(component_file.read_text().splitlines()[0].replace(" ", ""))


def odd_parity(data: bytes) -> bytes:
    return bytes(b ^ (bin(b).count("1") % 2 == 0) for b in data)


def xor(*parts: bytes) -> bytes:
    out = bytes(len(parts[0]))
    for part in parts:
        out = bytes(a ^ b for a, b in zip(out, part, strict=True))
    return out


def test_ceremony_from_a_clean_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    custodians = tmp_path / "custodians"  # the custodians' own media, not the key home
    custodians.mkdir()
    runner = CliRunner()

    def keys(*args: str, who: str = "alice", input: str | None = None) -> Result:
        result = runner.invoke(
            main, ["keys", "--home", str(home), "--operator", who, *args], input=input
        )
        assert result.exit_code == 0, result.output
        return result

    # 1. Two custodians each get an LMK component; each is shown by KCV.
    files = {}
    for who in ("alice", "bob"):
        files[who] = custodians / f"lmk-{who}.txt"
        out = keys("component", "--custodian", who, "--out", str(files[who]), who=who).output
        assert oracle.kcv(clear_of(files[who])) in out
    lmk = odd_parity(xor(clear_of(files["alice"]), clear_of(files["bob"])))
    lmk_args = ["-c", str(files["alice"]), "-c", str(files["bob"])]

    # 2. The LMK formed and its KCV recorded.
    out = keys("lmk-form", "--new", *lmk_args).output
    assert f"LMK KCV {oracle.kcv(lmk)}" in out

    # 3. A terminal's TMK formed from two TMK components (typed at hidden prompts).
    tmk_parts = []
    for who in ("carol", "dave"):
        path = custodians / f"tmk-{who}.txt"
        keys("component", "--custodian", who, "--out", str(path), who=who)
        tmk_parts.append(path)
    tmk = odd_parity(xor(*(clear_of(p) for p in tmk_parts)))
    typed = "".join(
        f"{who}\n{p.read_text().splitlines()[0]}\n{p.read_text().splitlines()[1][4:]}\n"
        for who, p in zip(("carol", "dave"), tmk_parts, strict=True)
    )
    out = keys("form", "tmk/00000001", "--usage", "TMK", *lmk_args, input=typed).output
    assert f"tmk/00000001 v1 TMK KCV {oracle.kcv(tmk)}" in out

    # 4. Sign-on keys under the TMK: the terminal decrypts field 62; psec confirms the KCVs.
    out = keys("sign-on", "tmk/00000001", "--prefix", "pos/00000001", *lmk_args).output
    match = re.search(r"field 62: ([0-9A-F]+)", out)
    assert match is not None
    f62 = bytes.fromhex(match.group(1))
    assert len(f62) == 60
    pik = oracle.tdes_ecb_decrypt(tmk, f62[:16])
    mak = oracle.tdes_ecb_decrypt(tmk, f62[20:28])
    tdk = oracle.tdes_ecb_decrypt(tmk, f62[40:56])
    for name, key in (("PIK", pik), ("MAK", mak), ("TDK", tdk)):
        assert f"pos/00000001/{name} v1 {name} KCV {oracle.kcv(key)}" in out

    # 5. Interactive LMK entry, a generated ZMK, a rotation, listing.
    lmk_typed = "".join(
        f"{who}\n{files[who].read_text().splitlines()[0]}\n{oracle.kcv(clear_of(files[who]))}\n"
        for who in ("alice", "bob")
    )
    keys("generate", "zmk/bank1", "--usage", "ZMK", input=lmk_typed)
    out = keys("rotate", "zmk/bank1", *lmk_args).output
    assert "zmk/bank1 v2 ZMK" in out
    out = keys("generate", "bank1/zpk", "--usage", "ZPK", *lmk_args).output
    zpk_kcv = out.split("KCV ")[-1].strip()
    out = keys("export", "bank1/zpk", "--kek", "zmk/bank1", *lmk_args).output
    encrypted = re.search(r": ([0-9A-F]{32}) KCV", out)
    assert encrypted is not None and f"KCV {zpk_kcv}" in out
    out = keys("import", "bank2/zpk", "--usage", "ZPK", "--kek", "zmk/bank1:2",
               "--value", encrypted.group(1), "--kcv", zpk_kcv, *lmk_args).output
    assert f"bank2/zpk v1 ZPK KCV {zpk_kcv}" in out
    listing = keys("list").output
    assert "pos/00000001/MAK\tMAK\tv1\t" + oracle.kcv(mak) in listing
    assert "zmk/bank1\tZMK\tv2" in listing

    # 6. The audit log has every step, who and KCVs; nothing anywhere shows a key value.
    audit = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    steps = [a["what"] for a in audit]
    assert steps.count("component.generate") == 4 and "lmk.form" in steps
    assert {"key.form", "key.sign-on", "key.generate", "key.rotate", "key.export",
            "key.import"} <= set(steps)
    assert all(a["who"] and a["at"] for a in audit)
    written = "".join(p.read_text() for p in home.rglob("*") if p.is_file()).upper()
    secrets = [lmk, tmk, pik, mak, tdk] + [clear_of(p) for p in (*files.values(), *tmk_parts)]
    assert not any(a.get("test_only") for a in audit)  # random components, not the demo ones
    for secret in secrets:
        assert secret.hex().upper() not in written
        assert secret.hex().upper()[:16] not in written


def test_open_soft_hsm_for_the_composition_root(tmp_path: Path) -> None:
    import asyncio

    import pytest

    from hsm.errors import LmkError
    from hsm.lmk import TEST_ONLY_COMPONENTS, Component
    from switch.key_home import open_soft_hsm

    home = tmp_path / "home"
    parts = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]
    with pytest.raises(LmkError):
        open_soft_hsm(home, parts)
    runner = CliRunner()
    typed = "".join(f"c{i}\n{c}\n{p.kcv}\n" for i, (c, p) in
                    enumerate(zip(TEST_ONLY_COMPONENTS, parts, strict=True)))
    result = runner.invoke(main, ["keys", "--home", str(home), "lmk-form", "--new"], input=typed)
    assert result.exit_code == 0 and "TEST ONLY" in result.output
    hsm = open_soft_hsm(home, parts)
    assert asyncio.run(hsm.diagnostics()) in result.output
    with pytest.raises(LmkError, match="TEST ONLY"):
        open_soft_hsm(home, parts, production=True)


def test_wrong_component_or_kcv_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    paths = []
    for who in ("a", "b"):
        path = tmp_path / f"{who}.txt"
        runner.invoke(main, ["keys", "--home", str(home), "component", "--custodian", who,
                             "--out", str(path)])
        paths.append(path)
    args = ["keys", "--home", str(home), "lmk-form", "-c", str(paths[0]), "-c", str(paths[1])]
    assert runner.invoke(main, [*args, "--new"]).exit_code == 0
    # A mistyped component: its KCV line no longer matches.
    lines = paths[1].read_text().splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text(("1" if lines[0][0] != "1" else "2") + lines[0][1:] + "\n" + lines[1] + "\n")
    result = runner.invoke(main, ["keys", "--home", str(home), "lmk-form", "-c", str(paths[0]),
                                  "-c", str(bad)])
    assert result.exit_code != 0 and "check value" in result.output
    assert lines[0] not in result.output

"""specs/key-ceremony.md from the spec alone (the party's side): a TMK's components read from
the custodians' files (§Components) form the TMK, and the same TMK read from an export file
under a key-injection facility's transport key (§Export file, §TR-31 key block) with the
`psec` library, byte by byte as the spec lays them out. Only `medswitch` is run (a blank
deployment: its first ceremony); nothing of the project is imported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from psec import tr31

from tests.contract import files

MEDSWITCH = str(Path(sys.executable).parent / "medswitch")
RUN_S = 60
TERMINAL = "P0009001"


def test_a_tmk_as_components_and_under_a_kif_key(tmp_path: Path) -> None:
    home, media = tmp_path / "home", tmp_path / "media"
    media.mkdir()

    def keys(*args: str) -> str:
        done = subprocess.run([MEDSWITCH, "keys", "--home", str(home), *args],
                              capture_output=True, text=True, timeout=RUN_S, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def component(name: str) -> Path:
        keys("component", "--custodian", name, "--out", str(media / name))
        return media / name

    lmk = [a for name in ("alice", "bob") for a in ("-c", str(component(name)))]
    keys("lmk-form", "--new", *lmk)
    kif_parts = [component("ivan"), component("judy")]
    keys("form", "kif/vendor", "--usage", "KIF_KEK",
         *[a for p in kif_parts for a in ("-k", str(p))], *lmk)
    keys("generate", f"tmk/{TERMINAL}", "--usage", "TMK", "--exportable", *lmk)

    # §Components: two files, named ALIAS.vVERSION.CUSTODIAN, three lines each.
    keys("export-components", f"tmk/{TERMINAL}", "--custodian", "carol", "--custodian", "dave",
         "--out-dir", str(media / "kld"), *lmk)
    parts = []
    for number, custodian in enumerate(("carol", "dave"), start=1):
        path = media / "kld" / f"tmk_{TERMINAL}.v1.{custodian}"
        assert path.stat().st_mode & 0o777 == 0o600
        value, check, heading = path.read_bytes().decode("ascii").split("\n")[:3]
        assert re.fullmatch(r"[0-9A-F]{4}( [0-9A-F]{4}){7}", value)
        clear = value.replace(" ", "")
        assert check == f"KCV:{files.kcv(bytes.fromhex(clear))}"
        assert re.fullmatch(rf"# tmk/{TERMINAL} v1 TMK KCV [0-9A-F]{{6}}: component {number} "
                            rf"of 2 for {custodian}", heading)
        parts.append(clear)
    tmk = files.from_components(*parts)
    tmk_kcv = heading.split(" KCV ")[1][:6]
    assert files.kcv(tmk) == tmk_kcv

    # §Export file and §TR-31 key block, under the KIF key formed from its components.
    export = media / "kif.keys"
    keys("export", f"tmk/{TERMINAL}", "--kek", "kif/vendor", "--form", "tr31", "--out",
         str(export), *lmk)
    kif = files.from_components(*[p.read_text().split("\n")[0].replace(" ", "")
                                  for p in kif_parts])
    first, second, third, *rest = export.read_bytes().decode("ascii").split("\n")
    assert (first, rest) == ("medswitch key export 1", [""])
    assert second == f"kek KIF_KEK kif/vendor v1 KCV {files.kcv(kif)}"
    key, alias, version, usage, kcv_word, check, block = third.split(" ")
    assert (key, alias, version, usage, kcv_word, check) == (
        "key", f"tmk/{TERMINAL}", "v1", "TMK", "KCV", tmk_kcv)
    header, unwrapped = tr31.unwrap(kif, block)
    assert unwrapped == tmk
    assert block[0] == "B" and int(block[1:5]) == len(block)
    assert (block[5:7], block[7], block[8], block[9:11], block[11], block[14:16]) == (
        "K0", "T", "B", "00", "N", "00")
    assert dict(header.blocks) == {"01": "TMK", "02": f"tmk/{TERMINAL}", "03": "1",
                                   "KC": "00" + tmk_kcv, **({"PB": header.blocks["PB"]}
                                                            if "PB" in header.blocks else {})}
    assert int(block[12:14]) == len(header.blocks)
    assert list(header.blocks)[:4] == ["01", "02", "03", "KC"]

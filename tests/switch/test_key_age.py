"""Item 5 of issue 19: keys by age and last rotation (`medswitch keys age`), and terminals'
TMKs rotated on a schedule (`medswitch keys rotate-tmks`): only those due, delivered as
custodians' components or under a key-injection facility's key; the terminal reloaded from the new
components signs on, its old TMK no longer does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvloop
from click.testing import CliRunner

from hsm.des import kcv as kcv_of
from hsm.keys import KeyUsage
from hsm.lmk import Component, combine
from simulators import bureau
from simulators.card import VirtualCard
from simulators.card.factory import blank_card
from switch.cli import main
from switch.key_home import component_files_of
from tests.support.ceremony import Ceremony, later, serving, with_tmks
from tests.support.daemon import INSTITUTION, make_database

TERMINALS = ("P0000101", "P0000102")


def deployment(tmp_path: Path) -> Ceremony:
    c = with_tmks(tmp_path, TERMINALS)
    c.keys("generate", "zmk/bank1", "--usage", "ZMK")
    return c


def rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    assert lines[0].startswith("alias\tusage\tversions")
    return {line.split("\t")[0]: line.split("\t") for line in lines[1:]}


def test_age_report_and_scheduled_rotation_by_components(tmp_path: Path) -> None:
    c = deployment(tmp_path)
    report = rows(c.keys("age", "--now", later(30)).output)
    assert set(report) == {*(f"tmk/{t}" for t in TERMINALS), "zmk/bank1"}
    assert all(r[2] == "1" and r[3] == "v1" and r[5] == "30" for r in report.values())

    printed = c.keys("export-components", f"tmk/{TERMINALS[1]}", "--custodian", "carol",
                     "--custodian", "dave", "--custodian", "erin").output.splitlines()
    shown = [line.split("write it down): ")[1].split(" KCV ") for line in printed]
    assert len(shown) == 3 and all(f"of 3 for {w}" in printed[i]
                                   for i, w in enumerate(("carol", "dave", "erin")))
    tmk_kcv = printed[0].split(" KCV ")[1].split(":")[0]
    assert kcv_of(combine([Component.parse(v, k) for v, k in shown])) == tmk_kcv
    old_dir = c.media / "kld-v1"  # the TMK the terminal was loaded with first
    c.keys("export-components", f"tmk/{TERMINALS[0]}", "--custodian", "carol", "--custodian",
           "dave", "--out-dir", str(old_dir))
    out_dir = c.media / "kld"
    rotate = ["rotate-tmks", "--older-than", "90", "--custodian", "carol", "--custodian", "dave",
              "--out-dir", str(out_dir)]
    out = c.keys(*rotate, "--now", later(30)).output
    assert "no TMK last rotated 90 or more days ago" in out and not out_dir.exists()
    out = c.keys(*rotate, "--now", later(100)).output
    for terminal in TERMINALS:
        assert f"tmk/{terminal} v1 -> v2 KCV" in out
        parts = sorted((out_dir / terminal).iterdir())
        assert len(parts) == 2
        kcv = out.split(f"tmk/{terminal} v1 -> v2 KCV ")[1].split()[0]
        assert kcv_of(combine(component_files_of(parts))) == kcv
    again = c.keys(*rotate, "--now", later(100)).output
    assert "no TMK last rotated 90 or more days ago" in again

    report = rows(c.keys("age", "--now", later(100), "--older-than", "50").output)
    assert set(report) == {"zmk/bank1"} and report["zmk/bank1"][5] == "100"
    report = rows(c.keys("age", "--usage", "TMK", "--now", later(101)).output)
    assert all(r[2] == "2" and r[3] == "v2" and r[5] == "1" for r in report.values())
    audit = (c.home / "audit.jsonl").read_text()
    assert audit.count('"key.rotate-tmk"') == 2

    # The terminal reloaded from the new components signs on; with the old TMK it cannot.
    make_database(c.home / "medswitch.db", {TERMINALS[0]: "kiosk"})
    new_parts = [str(p) for p in sorted((out_dir / TERMINALS[0]).iterdir())]
    old_parts = [str(p) for p in sorted(old_dir.iterdir())]
    card = c.media / "card.json"
    VirtualCard(blank_card(bytes.fromhex("00003101000000000001")), path=card)

    async def sign_on(parts: list[str], state: str) -> str:
        script = c.media / "sign_on.txt"
        script.write_text("sign_on\n")
        async with serving(c) as daemon:
            args = ["sim", "kiosk", "--terminal-id", TERMINALS[0], "--institution", INSTITUTION,
                    "--port", str(daemon.app.terminal_port), "--pan", "1",
                    "--card", str(card), "--state", str(c.media / state), "--script", str(script)]
            args += [a for p in parts for a in ("--tmk-component", p)]
            result = await asyncio.to_thread(CliRunner().invoke, main, args)
            return f"{result.exit_code}\n{result.output}{result.exception!r}"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out = runner.run(asyncio.wait_for(sign_on(new_parts, "new.json"), timeout=60))
        assert out.startswith("0\nsigned on: batch"), out
        out = runner.run(asyncio.wait_for(sign_on(old_parts, "old.json"), timeout=60))
        assert out.startswith("1\nline 1: sign_on: the working keys of field 62 do not match "
                              "their check values under this terminal's TMK"), out


def test_scheduled_rotation_under_a_kif_key(tmp_path: Path) -> None:
    c = deployment(tmp_path)
    kif = [c.component(o, f"kif.{o}") for o in ("ivan", "judy")]
    c.keys("form", "kif/vendor", "--usage", "KIF_KEK", *[a for p in kif for a in ("-k", str(p))])
    export = c.media / "kif.keys"
    out = c.keys("rotate-tmks", "--older-than", "365", "--kif", "kif/vendor", "--out",
                 str(export), "--now", later(400)).output
    assert f"2 TMKs under kif/vendor v1 -> {export}" in out
    listed = c.keys("list").output

    # The facility's own HSM (another home, its own LMK) takes them in with the same KIF key.
    vendor = Ceremony(tmp_path / "vendor", c.media)
    vendor.lmk_files = [vendor.component("vic", "v.lmk.vic"), vendor.component("wes", "v.lmk.wes")]
    vendor.keys("lmk-form", "--new", *[a for f in vendor.lmk_files for a in ("-c", str(f))])
    vendor.keys("form", "kif/centre", "--usage", "KIF_KEK",
                *[a for p in kif for a in ("-k", str(p))])
    out = vendor.keys("import-block", str(export), "--kek", "kif/centre").output
    for terminal in TERMINALS:
        kcv = listed.split(f"tmk/{terminal}\tTMK\tv2\t")[1].split("\t")[0]
        assert f"tmk/{terminal} v1 TMK KCV {kcv}" in out
    party = asyncio.run(bureau.receive(export.read_text(), component_files_of(kif),
                                       KeyUsage.KIF_KEK))
    assert party.by_alias(f"tmk/{TERMINALS[0]}", 2).kcv in listed
    refused = c.keys("rotate-tmks", "--older-than", "365", "--kif", "kif/vendor", ok=False)
    assert "--kif ALIAS --out FILE" in refused.output
    # The next scheduled run finds the last export not yet collected: nothing rotates.
    uncollected = c.keys("rotate-tmks", "--older-than", "1", "--kif", "kif/vendor", "--out",
                         str(export), "--now", later(800), ok=False).output
    assert uncollected == (f"Error: {export} exists (the last rotation's export, not yet "
                           "collected?): nothing rotated\n")
    assert c.keys("list").output == listed

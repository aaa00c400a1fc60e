"""issue 19's ceremony from a blank deployment, through `medswitch keys` and the simulators:
custodians form the LMK and the outside parties' transport keys; a new terminal's TMK leaves as
two custodians' components and the POS simulator loaded from them signs on and settles; the
card master keys leave for a personalisation bureau, the purchase key for the PSAM issuer; a
card the bureau personalised from that export loads at a kiosk and pays at the POS; a forbidden
export is refused with its rule named. No key value appears in anything the centre wrote."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from hsm.keys import KeyUsage
from hsm.policy import POLICY
from ledger.demo import init_demo
from messages.pretty import mask_pan
from simulators import bureau, pos_records, pos_signatures
from simulators.card import VirtualCard
from simulators.psam import VirtualPsam
from simulators.terminal_card import open_application
from switch.card_io.connection import DirectConnection
from switch.key_home import component_files_of, open_soft_hsm, personal_keys
from switch.keystore_file import FileKeyStore
from tests.support.ceremony import Ceremony, invoke, serving
from tests.support.daemon import Daemon, now
from tests.support.on_file import first_card, first_psam
from tests.support.settlement import his_submit, medical_reference

U = KeyUsage
SPEC = Path(__file__).parents[2] / "specs" / "key-ceremony.md"
CARD_KEYS = [f"card/{u}" for u in ("MK_CONTROL", "MK_LOAD", "MK_PURCHASE", "MK_TAC", "MK_UNLOAD",
                                     "MK_PIN_RELOAD", "MK_PIN_UNBLOCK", "MK_APP_MAINT",
                                     "MK_RECORD")]  # the record key: bureau cards hold the DRK
NEW_POS, KIOSK = "P0009001", "K0000001"


def test_ceremony_from_a_blank_deployment(tmp_path: Path) -> None:
    media = tmp_path / "media"  # the custodians' own media and the parties' mail, not the home
    media.mkdir()
    c = Ceremony(tmp_path / "home", media)

    # Custodians form the LMK, then the bureau's and the PSAM issuer's transport keys.
    c.lmk_files = [c.component("alice", "lmk.alice"), c.component("bob", "lmk.bob")]
    c.keys("lmk-form", "--new", *[a for f in c.lmk_files for a in ("-c", str(f))])
    transport = {"BUREAU_KEK": [c.component(o, f"bureau.{o}") for o in ("erin", "frank")]}
    c.documented("medswitch keys form bureau/acme --usage BUREAU_KEK -k bureau.erin "
                 "-k bureau.frank -c lmk.alice -c lmk.bob", SPEC)
    transport["PSAM_KEK"] = [c.component(o, f"psam.{o}") for o in ("gina", "hal")]
    c.keys("form", "psam-issuer/kek", "--usage", "PSAM_KEK",
           *[a for p in transport["PSAM_KEK"] for a in ("-k", str(p))])
    policy = c.keys("policy").output.splitlines()
    assert policy[1:] == ["\t".join(rule.row()) for rule in POLICY]

    # The centre's keys, card master keys exportable (fixed at generation).
    for alias in CARD_KEYS:
        c.keys("generate", alias, "--usage", alias.split("/")[1], "--exportable")
    c.keys("generate", "centre/DATA_CHECK", "--usage", "DATA_CHECK", "--exportable")
    for usage in ("PERSONAL_DATA", "PERSONAL_INDEX"):
        c.keys("generate", f"centre/{usage}", "--usage", usage)

    # The ledger (demo institutions and cardholders) sealed under the ceremony's keys.
    db = c.home / "medswitch.db"
    hsm = open_soft_hsm(c.home, component_files_of(c.lmk_files))
    sealing = asyncio.run(personal_keys(hsm, FileKeyStore(c.home / "keys.jsonl")))
    init_demo(db, 3, personal=sealing)
    card_row, psam_row = first_card(db), first_psam(db)
    # A new terminal is added, and the institution's PSAM moved to it, by command.
    out = c.estate("terminals", "add", NEW_POS, "--institution", psam_row.institution_id,
                   "--kind", "pos").output
    assert NEW_POS in out
    c.cards("unbind", psam_row.serial, group="psams")
    assert psam_row.serial in c.estate("terminals", "replace-psam", NEW_POS, "--psam",
                                       psam_row.serial).output
    with sqlite3.connect(db) as sql:  # audited under the logged-in operator
        done = sql.execute("SELECT actor, action FROM audit_log WHERE subject IN (?, ?) "
                           "ORDER BY seq", (NEW_POS, psam_row.serial)).fetchall()
    assert done == [("alice", "terminals.add"), ("alice", "psams.unbind"),
                    ("alice", "terminals.replace-psam")]

    # The terminals' TMKs leave as two custodians' components for the key-loading device.
    tmk_parts = {}
    for terminal, owners in ((NEW_POS, ("carol", "dave")), (KIOSK, ("carol", "dave"))):
        c.keys("generate", f"tmk/{terminal}", "--usage", "TMK", "--exportable")
        out = c.keys("export-components", f"tmk/{terminal}", *[a for o in owners for a in
                     ("--custodian", o)], "--out-dir", str(media / terminal)).output
        assert out.count("written to") == 2
        tmk_parts[terminal] = sorted((media / terminal).iterdir())

    # Card master keys leave for the bureau, the purchase key for the PSAM issuer (TR-31).
    c.keys("export", *CARD_KEYS, "centre/DATA_CHECK", "--kek", "bureau/acme", "--form", "tr31",
           "--out", str(media / "bureau.keys"))
    c.keys("export", "card/MK_PURCHASE", "--kek", "psam-issuer/kek", "--form", "tr31",
           "--out", str(media / "psam-issuer.keys"))

    # A forbidden export is refused, naming its rule; so is a key not made exportable.
    refused = c.keys("export", "card/MK_LOAD", "--kek", "psam-issuer/kek", "--form", "tr31",
                     ok=False).output
    example = ("Error: PolicyError: policy: a MK_LOAD does not travel under a PSAM_KEK as tr31; "
               "it travels only by rule card-masters-to-bureau (under a BUREAU_KEK as tr31)")
    assert example in SPEC.read_text() and example in refused  # as the spec shows it
    refused = c.keys("export", "centre/PERSONAL_DATA", "--kek", "bureau/acme", "--form", "tr31",
                     ok=False).output
    assert "stays-in-hsm" in refused

    # The bureau personalises the card, the PSAM issuer the PSAM, from the exports alone.
    psam_serial = bytes.fromhex(psam_row.serial).rjust(10, b"\0")
    bureau_keks = bureau.kek_components(transport["BUREAU_KEK"])
    issuer_keks = bureau.kek_components(transport["PSAM_KEK"])

    card_path, psam_path = tmp_path / "card.json", tmp_path / "psam.json"
    for kind, export, keks, serial_hex, out in (
        ("card", "bureau.keys", transport["BUREAU_KEK"], card_row.serial, card_path),
        ("psam", "psam-issuer.keys", transport["PSAM_KEK"], psam_row.serial, psam_path),
    ):  # `python -m simulators.bureau …`, as the parties run it
        bureau.main([kind, "--export", str(media / export), "--serial",
                     serial_hex.rjust(20, "0"), "--key-version", "1", "--terminal-no",
                     psam_row.terminal_no, "--out", str(out),
                     *[a for k in keks for a in ("--kek-component", str(k))]])
    terminals = Terminals(tmp_path, psam_row.institution_id, psam_path, tmk_parts)
    bills: list[str] = []

    async def day_one() -> None:
        async with serving(c) as daemon:
            out = await terminals.kiosk(daemon, card_row.card_no, card_path, "load 20000")
            assert "loaded 200.00: ED now 200.00" in out
            assert "centre: card ED (shadow) 200.00" in out
            bill = await his_bill(daemon, psam_row.institution_id, card_row.card_no, "HIS-C-1")
            bills.append(bill)
            out = await terminals.pos(daemon, card_row.card_no, card_path,
                                      f"settle {bill} 2000\npurchase 1500")
            assert out.startswith("signed on: batch 000002")
            assert "personal account 20.00: card ED debited, advice 00" in out
            assert "visit recorded on the card" in out  # the bureau wrote the card's DRK
            assert "purchase 15.00 from the card's ED, advice 00" in out
            assert "batch 000002: 2 debits, 35.00\nbalanced" in out

    timed(day_one())
    (bill,) = bills  # the bill settled at the new POS, by command: card number masked
    assert bill in c.estate("bills", "list").output
    shown = json.loads(c.estate("bills", "show", bill, "--json").output)
    assert (shown["his_bill_no"], shown["card"]) == ("HIS-C-1", mask_pan(card_row.card_no))
    assert card_row.card_no not in c.estate("bills", "list").output

    # Card master key version 2: new cards on it, version 1 cards keep working.
    for alias in CARD_KEYS:
        assert f"{alias} v2 " in c.keys("rotate", alias, "--exportable").output
    c.keys("generate", "cards/file", "--usage", "FILE", "--exportable")
    c.keys("export", *[f"{a}:2" for a in CARD_KEYS], "centre/DATA_CHECK", "cards/file",
           "--kek", "bureau/acme", "--form", "tr31", "--out", str(media / "bureau-v2.keys"))
    c.keys("export", "card/MK_PURCHASE:2", "--kek", "psam-issuer/kek", "--form", "tr31",
           "--out", str(media / "psam-issuer-v2.keys"))
    c.keys("generate", "centre/CARD_SIGN", "--usage", "CARD_SIGN")  # signs the new cards' data
    published = media / "centre-card-sign-v1.pem"  # what every POS vendor and HIS gets
    c.keys("public-key", "centre/CARD_SIGN", "--out", str(published))
    replaced = first_card(db, offset=1)
    c.cards("replace", replaced.card_no, "--reason", "lost")
    health = media / "health.jsonl"  # the new card is issued with initial health data
    health.write_text(json.dumps({"cardholder_id": replaced.cardholder_id, "blood_type": "B-",
                                  "chronic_conditions": ["I10"]}) + "\n")  # fmt: skip
    out = c.cards("issue", "--out", str(media / "batches"), "--health", str(health)).output
    assert "1 cards" in out
    (batch,) = (media / "batches").glob("*.bat")
    c.cards("approve", str(batch), who="bob")

    async def outside_v2() -> tuple[str, VirtualCard]:
        cards = await bureau.receive((media / "bureau-v2.keys").read_text(), bureau_keks,
                                     U.BUREAU_KEK)
        ((card_no, card),) = await bureau.personalise_batch(cards, batch.read_bytes())
        psams = await bureau.receive((media / "psam-issuer-v2.keys").read_text(), issuer_keks,
                                     U.PSAM_KEK)
        await bureau.personalise_psam(psams, VirtualPsam.load(psam_path), psam_serial,
                                      bytes.fromhex(psam_row.terminal_no), 2)
        return card_no, card

    new_no, new_card = asyncio.run(outside_v2())
    new_path = tmp_path / "card-v2.json"
    VirtualCard(new_card.state, path=new_path)
    with sqlite3.connect(db) as sql:
        assert sql.execute("SELECT key_version, status FROM cards WHERE card_no = ?",
                           (new_no,)).fetchone() == (2, "issued")
    conn = DirectConnection(new_card)  # the bureau wrote them, with the centre's check code
    conn.connect()
    open_application(conn, "123456")
    on_card = pos_records.health(conn)
    assert on_card is not None and (on_card.blood_type, on_card.chronic) == ("B-", ("I10",))
    # The centre signed them when it made the batch; the bureau, which never holds the signing
    # key, wrote the batch's signatures into EF 001B (records 1-2 and 3-4).
    ef0019, sw = conn.transmit(bytes.fromhex("00B0990060"))
    assert sw == 0x9000
    unpublished = pos_signatures.check_health(conn, [], ef0019)
    assert unpublished.verdict is pos_signatures.Verdict.NO_KEY
    pending = "SELECT pending FROM card_health WHERE person_id = ?"
    with sqlite3.connect(db) as sql:
        assert sql.execute(pending, (replaced.cardholder_id,)).fetchone() == (1,)
    out = c.cards("activate", str(batch), "--personalised-by", "acme", who="carol").output
    with sqlite3.connect(db) as sql:  # activated: the centre's copy is on a card
        assert sql.execute(pending, (replaced.cardholder_id,)).fetchone() == (0,)
    assert "1 cards active (personalised by acme)" in out

    async def day_two() -> None:
        async with serving(c) as daemon:
            out = await terminals.kiosk(daemon, new_no, new_path, "load 5000")
            assert "loaded 50.00: ED now 50.00" in out
            out = await terminals.pos(daemon, new_no, new_path, "purchase 1200")
            assert "purchase 12.00 from the card's ED, advice 00" in out
            bill = await his_bill(daemon, psam_row.institution_id, new_no, "HIS-C-2",
                                  first=False)
            out = await terminals.pos(daemon, new_no, new_path, f"settle_visit {bill} 2000 IM "
                                      "J45.9\nbook", signed_by=published)  # a v2 bureau card
            assert "visit recorded on the card" in out and "visits on the card: 1" in out
            assert "holder data signed by the centre (key v1)" in out  # offline, by the POS
            assert "health data signed by the centre (key v1)" in out
            out = await terminals.pos(daemon, card_row.card_no, card_path, "purchase 500")
            assert "purchase 5.00 from the card's ED, advice 00" in out

    timed(day_two())

    # Nothing the centre wrote holds a clear component.
    written = "".join(p.read_text(errors="replace") for p in c.home.rglob("*")
                      if p.is_file() and p.suffix != ".db").upper()
    for part in [*c.lmk_files, *transport["BUREAU_KEK"], *tmk_parts[NEW_POS]]:
        clear = part.read_text().splitlines()[0].replace(" ", "")
        assert clear not in written


def timed(day: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(day, timeout=120))


async def his_bill(daemon: Daemon, institution: str, card_no: str, his_no: str,
                   *, first: bool = True) -> str:
    """A bill of 20.00 (two A01 at 10.00) for the card at the institution: its id (the
    catalogue and policy stored with the ``first``)."""
    if first:
        token = await asyncio.to_thread(medical_reference, daemon, institution)
    else:
        assert daemon.app.stores is not None
        micros = int(now().timestamp() * 1_000_000)
        token = daemon.app.stores.reference.issue_credential(institution, micros)
    body = {"his_bill_no": his_no, "card_no": card_no, "service_date": now().date().isoformat(),
            "lines": [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}]}
    bill = await asyncio.to_thread(his_submit, daemon.app.http_port, institution, token, body)
    return str(bill["bill_id"])


@dataclass
class Terminals:
    """The kiosk and the new POS, each loaded from its TMK's component files (`medswitch sim`
    scripts through the CLI)."""

    tmp: Path
    institution: str
    psam: Path
    tmk_parts: dict[str, list[Path]]

    async def _run(self, daemon: Daemon, args: list[str], terminal: str, pan: str, card: Path,
                   script: str) -> str:
        path = self.tmp / f"{terminal}.txt"
        path.write_text(f"sign_on\n{script}\n")
        args += ["--port", str(daemon.app.terminal_port), "--pan", pan, "--card", str(card)]
        args += [a for p in self.tmk_parts[terminal] for a in ("--tmk-component", str(p))]
        result = await invoke([*args, "--state", str(self.tmp / f"{terminal}.json"),
                               "--script", str(path)])
        assert result.exit_code == 0, result.output
        return result.output

    async def kiosk(self, daemon: Daemon, pan: str, card: Path, script: str) -> str:
        args = ["sim", "kiosk", "--terminal-id", KIOSK]
        return await self._run(daemon, args, KIOSK, pan, card, f"insert\n{script}\nbalance")

    async def pos(self, daemon: Daemon, pan: str, card: Path, script: str,
                  signed_by: Path | None = None) -> str:
        """`signed_by`: the centre's published card signing key v1, for `book` to check."""
        args = ["sim", "pos", "--terminal-id", NEW_POS, "--institution", self.institution,
                "--psam", str(self.psam)]
        args += [] if signed_by is None else ["--card-sign-key", f"1:{signed_by}"]
        return await self._run(daemon, args, NEW_POS, pan, card, f"{script}\nsettle_batch")

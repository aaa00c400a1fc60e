"""`medswitch cards` / `medswitch psams` end to end on virtual cards in direct connections:
issue → approve (second operator) → personalize, batch refusals, re-runs, determinism, and a
personalised card that then loads with the HSM verifying MAC1 and TAC."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hsm.keys import CardKeyPath
from hsm.pboc import card_factor
from ledger import schema
from simulators.card import VirtualCard
from simulators.card.factory import blank_card, blank_psam
from simulators.psam import VirtualPsam
from switch.card_io.connection import DirectConnection
from switch.card_io.personalize import decode_authorisations
from switch.cli import main
from switch.demo.keys import custodian_files
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.card_issuance import NOW, cli, deployment, load_checked, make_db
from tests.support.operators import NamedOperators

__all__ = ["deployment"]  # the fixture

def test_issue_approve_personalize(deployment: dict[str, Any]) -> None:
    d = deployment
    out = d["tmp"] / "batches"
    assert cli(d, "cards", "alice", "factory-keys").exit_code == 0
    result = cli(d, "cards", "alice", "issue", "--out", str(out), "--now", NOW)
    assert result.exit_code == 0, result.output
    (batch,) = sorted(out.glob("*.bat"))
    assert "3 cards" in result.output
    assert b"P0000001" not in batch.read_bytes()  # personal data are encrypted
    with sqlite3.connect(d["db"]) as db:  # rows written in clear before: sealed on first use
        clear = db.execute("SELECT count(*) FROM cardholders WHERE ssn IS NOT NULL"
                           " OR name IS NOT NULL OR personal IS NULL").fetchone()[0]
    assert clear == 0

    refused = cli(d, "cards", "bob", "personalize", str(batch), "--reader", "r1")
    assert refused.exit_code != 0 and "not approved" in refused.output
    same = cli(d, "cards", "alice", "approve", str(batch))
    assert same.exit_code != 0 and "second operator" in same.output
    assert cli(d, "cards", "bob", "approve", str(batch)).exit_code == 0

    serials = [bytes.fromhex(f"3101{n:012d}").rjust(10, b"\0") for n in (1, 2, 3)]
    cards = {f"r{i}": VirtualCard(blank_card(s)) for i, s in enumerate(serials, 1)}
    present = {k: v for k, v in cards.items() if k != "r3"}
    first = cli(d, "cards", "carol", "personalize", str(batch), "--reader", "r1", "--reader",
                "r2", readers=present)
    assert first.exit_code == 1 and "2 personalised, 1 failed" in first.output
    assert "not in any reader" in first.output
    again = cli(d, "cards", "carol", "personalize", str(batch), *[a for r in cards for a in
                ("--reader", r)], readers=cards)
    assert again.exit_code == 0 and "1 personalised, 0 failed" in again.output
    engine = sa.create_engine(f"sqlite:///{d['db']}")
    with engine.connect() as db:
        statuses = db.execute(sa.select(schema.cards.c.status)).scalars().all()
    assert statuses == ["active"] * 3
    assert batch.with_name(batch.name + ".print").exists()
    assert "issue" in (d["home"] / "audit.jsonl").read_text()

    # The personalised card loads, the HSM verifying MAC1 and the TAC with its own keys.
    card = cards["r1"]
    assert card.state.pin == bytes.fromhex("123456")
    asyncio.run(load_checked(d["home"], DirectConnection(card), serials[0]))

    psam = VirtualPsam(blank_psam(bytes.fromhex("31010000000000000777")))
    bound = cli(d, "psams", "alice", "personalize", "--reader", "p", "--serial",
                "31010000000000000777", "--terminal-no", "000012345678", "--institution",
                "hosp1", "--terminal", "00000001", readers={"p": psam})
    assert bound.exit_code == 0, bound.output
    assert psam.state.terminal_id == bytes.fromhex("000012345678") and 1 in psam.state.keys


def test_batch_refused_whole(deployment: dict[str, Any]) -> None:
    d = deployment
    out = d["tmp"] / "batches"
    assert cli(d, "cards", "alice", "issue", "--out", str(out), "--now", NOW).exit_code == 0
    (batch,) = sorted(out.glob("*.bat"))
    data = batch.read_bytes()
    batch.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    bad = cli(d, "cards", "bob", "approve", str(batch))
    assert bad.exit_code != 0 and "BatchError" in bad.output

    async def retrailer() -> bytes:
        hsm = open_soft_hsm(d["home"], component_files_of(custodian_files(d["home"])))
        key = await resolve(Home(d["home"], "t"), "cards/file")
        plain = await hsm.decrypt_data(key, data)
        return await hsm.encrypt_data(key, plain.replace(b"T|3|", b"T|2|"))

    batch.write_bytes(asyncio.run(retrailer()))
    bad = cli(d, "cards", "bob", "approve", str(batch))
    assert bad.exit_code != 0 and "count" in bad.output
    batch.write_bytes(data)
    assert cli(d, "cards", "bob", "approve", str(batch)).exit_code == 0
    batch.write_bytes(data + bytes(8))
    changed = cli(d, "cards", "bob", "personalize", str(batch), "--reader", "r")
    assert changed.exit_code != 0


def test_issuing_10000_cards_is_deterministic(tmp_path: Path, deployment: dict[str, Any]) -> None:
    d = deployment
    outputs = []
    for run in ("a", "b"):
        db = tmp_path / f"{run}.db"
        make_db(db, 10_000)
        out = tmp_path / f"out-{run}"
        base = ["--home", str(d["home"]), "--db", str(db), *d["base"][4:]]
        env = NamedOperators(db, d["tmp"] / f"tokens-{run}").env(["--operator", "alice"])
        result = d["runner"].invoke(main, ["cards", *base, "--operator", "alice", "issue",
                                           "--out", str(out), "--now", NOW], env=env)
        assert result.exit_code == 0, result.output
        outputs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.bat"))})
    assert len(outputs[0]) == 10 and outputs[0] == outputs[1]
    assert all(name.startswith("cards-20261125100000-") for name in outputs[0])


def test_replacement_and_renewal(deployment: dict[str, Any]) -> None:
    d = deployment
    out = d["tmp"] / "batches"
    assert cli(d, "cards", "alice", "issue", "--out", str(out), "--now", NOW).exit_code == 0
    engine = sa.create_engine(f"sqlite:///{d['db']}")
    cards_t = schema.cards

    def rows() -> dict[str, tuple[str, str, str | None]]:
        with engine.connect() as db:
            found = db.execute(sa.select(cards_t.c.card_no, cards_t.c.cardholder_id,
                                         cards_t.c.status, cards_t.c.replaced_by)).all()
        return {r[0]: (r[1], r[2], r[3]) for r in found}

    first = rows()
    old = next(no for no, (holder, _, _) in first.items() if holder == "P0000001")
    result = cli(d, "cards", "alice", "replace", old, "--reason", "lost")
    assert result.exit_code == 0 and old not in result.output  # the PAN is masked
    assert cli(d, "cards", "alice", "replace", old, "--reason", "lost").exit_code != 0
    again = cli(d, "cards", "alice", "issue", "--out", str(out), "--now", "2026-11-26T09:00:00")
    assert again.exit_code == 0 and "1 cards" in again.output
    after = rows()
    (new,) = set(after) - set(first)
    assert after[old] == ("P0000001", "replaced", new)
    assert after[new] == ("P0000001", "issued", None)
    # renewal: every card expiring before 2040 gets a successor
    renew = cli(d, "cards", "alice", "issue", "--out", str(out), "--now", "2026-11-27T09:00:00",
                "--renew-before", "2040-01-01")
    assert renew.exit_code == 0 and "3 cards" in renew.output
    assert all(r[2] is not None for no, r in rows().items() if no in after)


def test_psam_batch_issue_approve_personalize(deployment: dict[str, Any]) -> None:
    d = deployment
    out = d["tmp"] / "psams"
    assert cli(d, "cards", "alice", "factory-keys").exit_code == 0
    made = cli(d, "psams", "alice", "issue", "--out", str(out), "--now", NOW)
    assert made.exit_code == 0 and "1 PSAMs" in made.output, made.output
    (batch,) = out.glob("psams-*.bat")
    assert b"00000001" not in batch.read_bytes()
    assert "every POS" in cli(d, "psams", "alice", "issue", "--out", str(out)).output
    assert cli(d, "psams", "bob", "personalize", str(batch), "--reader", "p").exit_code != 0
    assert cli(d, "psams", "alice", "approve", str(batch)).exit_code != 0  # its maker
    assert cli(d, "psams", "bob", "approve", str(batch)).exit_code == 0
    psam = VirtualPsam(blank_psam(bytes.fromhex("3109000000000001").rjust(10, b"\0")))
    done = cli(d, "psams", "carol", "personalize", str(batch), "--reader", "x", "--reader", "p",
               readers={"p": psam, "x": VirtualCard(blank_card(bytes(10)))})
    assert done.exit_code == 0 and "1 personalised, 0 failed" in done.output, done.output
    assert psam.state.terminal_id == bytes.fromhex("310100000001")
    engine = sa.create_engine(f"sqlite:///{d['db']}")
    with engine.connect() as db:
        row = db.execute(sa.select(schema.psams)).one()
    assert (row.serial, row.terminal_id, row.status) == ("3109000000000001", "00000001", "active")
    again = cli(d, "psams", "carol", "personalize", str(batch), "--reader", "p",
                readers={"p": psam})
    assert again.exit_code == 0 and "0 personalised" in again.output  # finished: skipped


def test_write_authorisation_with_a_fresh_check_code(deployment: dict[str, Any]) -> None:
    d = deployment
    out = d["tmp"] / "batches"
    assert cli(d, "cards", "alice", "factory-keys").exit_code == 0
    assert cli(d, "cards", "alice", "issue", "--out", str(out), "--now", NOW).exit_code == 0
    (batch,) = out.glob("*.bat")
    assert cli(d, "cards", "bob", "approve", str(batch)).exit_code == 0
    serial = bytes.fromhex("3101000000000002").rjust(10, b"\0")
    card = VirtualCard(blank_card(serial))
    done = cli(d, "cards", "carol", "personalize", str(batch), "--reader", "r",
               readers={"r": card})
    assert "1 personalised" in done.output
    wrote = cli(d, "cards", "carol", "write-authorisation", "--reader", "r", "--grant",
                "M01:2026", "--grant", "T2:2026", readers={"r": card})
    assert wrote.exit_code == 0, wrote.output
    auth = card.state.binary[0x17]
    assert decode_authorisations(auth[:60]) == [("M01", 2026), ("T2", 2026)]

    async def check() -> bool:
        hsm = open_soft_hsm(d["home"], component_files_of(custodian_files(d["home"])))
        path = CardKeyPath(await resolve(Home(d["home"], "t"), "centre/DATA_CHECK"),
                           (card_factor(serial),))
        return await hsm.verify_card_data_check_code(path, card.state.binary[0x16] + auth[:60],
                                                     auth[60:])

    assert asyncio.run(check())
    bad = cli(d, "cards", "carol", "write-authorisation", "--reader", "r", "--grant", "M01",
              readers={"r": card})
    assert bad.exit_code != 0

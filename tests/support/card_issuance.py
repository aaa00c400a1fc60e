"""Card issuance tests' world: a small SQLite deployment of cardholders (the ``deployment``
fixture: a demo key home and the ledger), `medswitch cards|psams` run in it as a named operator
with virtual cards in its readers, and a load that checks a personalised card's keys through
the key home's HSM."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from hsm.interface import OnlineTxn
from hsm.keys import CardKeyPath, KeyUsage
from hsm.pboc import bcd_datetime, card_factor
from ledger import schema
from ledger.migrate import upgrade_sqlite
from switch.card_io.connection import CardConnection, DirectConnection, expect
from switch.cli import main
from switch.demo.keys import custodian_files, provision
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.operators import NamedOperators


def make_db(path: Path, holders: int) -> None:
    upgrade_sqlite(path)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as db:
        db.execute(sa.insert(schema.institutions), [
            {"id": "unit1", "kind": "unit", "name": "单位一"},
            {"id": "hosp1", "kind": "hospital", "name": "医院一", "level": 3},
        ])
        db.execute(sa.insert(schema.terminals).values(id="00000001", institution_id="hosp1",
                                                      kind="pos"))
        db.execute(sa.insert(schema.cardholders), [
            {"id": f"P{i:07d}", "ssn": f"1101011990{i:08d}", "name": f"持卡人{i}",
             "category": "employed", "unit_id": "unit1"} for i in range(1, holders + 1)
        ])
    engine.dispose()


async def load_checked(
    home: Path, conn: CardConnection, serial: bytes, *, connect: bool = True
) -> None:
    """A load of 2.56 yuan into the EP: the key home's HSM checks MAC1, makes MAC2, checks
    the TAC."""
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))
    h = Home(home, "test")
    load_key = CardKeyPath(await resolve(h, "card/MK_LOAD"), (card_factor(serial),))
    tac_key = CardKeyPath(await resolve(h, "card/MK_TAC"), (card_factor(serial),))
    if connect:
        conn.connect()
    expect(conn, bytes.fromhex("00A4040006D15600000503"), "SELECT")
    term = bytes.fromhex("000012345678")
    init = expect(conn, bytes.fromhex("805000020B0100000100") + term + b"\x10", "INIT")
    txn = OnlineTxn(2, 0, 256, 0, init[8:12], term, init[12:16])
    assert await hsm.verify_mac1(load_key, txn)
    when = datetime(2026, 11, 25, 11, 0)
    mac2 = await hsm.generate_mac2(load_key, txn, when)
    tac = expect(conn, bytes.fromhex("805200000B") + bcd_datetime(when) + mac2 + b"\x04", "CR")
    assert await hsm.verify_load_tac(tac_key, txn, 256, when, tac)
    assert KeyUsage.MK_LOAD is load_key.master.usage


NOW = "2026-11-25T10:00:00"


@pytest.fixture
def deployment(tmp_path: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    asyncio.run(provision(home, []))
    files = [str(f) for f in custodian_files(home)]
    db = tmp_path / "medswitch.db"
    make_db(db, 3)
    base = ["--home", str(home), "--db", str(db)] + [a for f in files for a in ("-c", f)]
    runner = CliRunner()
    listed = runner.invoke(main, ["keys", "--home", str(home), "list", "--alias", "cards/file"])
    assert "cards/file\tFILE\tv1" in listed.output  # the demo makes issuance's file key
    return {"home": home, "db": db, "base": base, "runner": runner, "tmp": tmp_path}


def cli(
    d: dict[str, Any], group: str, who: str, *args: str, readers: dict[str, Any] | None = None
) -> Result:
    """Run `medswitch GROUP` as WHO; READERS (name → virtual card) stand in for PC/SC."""
    connect = (lambda name: DirectConnection((readers or {})[name], name)) if readers else None
    obj = {"connect": connect} if connect else None
    runner: CliRunner = d["runner"]
    env = NamedOperators(d["db"], d["tmp"] / "operator-tokens").env(["--operator", who])
    return runner.invoke(main, [group, *d["base"], "--operator", who, *args], obj=obj, env=env)

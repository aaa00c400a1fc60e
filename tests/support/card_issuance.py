"""Card issuance tests' world: a small SQLite deployment of cardholders, and a load that checks
a personalised card's keys through the key home's HSM."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from hsm.interface import OnlineTxn
from hsm.keys import CardKeyPath, KeyUsage
from hsm.pboc import bcd_datetime, card_factor
from ledger import schema
from ledger.migrate import upgrade_sqlite
from switch.card_io.connection import CardConnection, expect
from switch.demo.keys import custodian_files
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve


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

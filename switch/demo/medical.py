"""The demo deployment's medical reference data: a small catalogue, this year's example policy,
and a HIS credential per hospital and pharmacy (written to the demo home, mode 0600, since a
credential is shown once and stored only as a salted hash)."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
from ledger.medical.policy import EXAMPLE, parse_policy
from ledger.medical.sql_reference import ReferenceData
from ledger.medical.sql_store import sqlite_engine

A, B, C = Coverage.A, Coverage.B, Coverage.C
ITEMS = (
    CatalogueItem("A01", "阿莫西林胶囊", "盒", 1_000, A),
    CatalogueItem("A02", "普通门诊诊查费", "次", 500, A),
    CatalogueItem("A03", "血常规检查", "次", 2_000, A),
    CatalogueItem("A04", "二甲双胍片", "盒", 1_500, A),
    CatalogueItem("B01", "头孢克洛缓释片", "盒", 2_000, B, 1_000),
    CatalogueItem("B02", "CT 平扫", "次", 15_000, B, 2_000),
    CatalogueItem("B03", "胰岛素注射液", "支", 6_000, B, 1_000),
    CatalogueItem("B04", "住院床位费", "日", 5_000, B, 1_000),
    CatalogueItem("C01", "滋补膏方", "剂", 5_000, C),
    CatalogueItem("C02", "保健按摩", "次", 8_000, C),
)
CREDENTIALS_FILE = "his-credentials.txt"


def catalogue_version(now: dt.datetime) -> CatalogueVersion:
    """The demo's catalogue, version 1, in force from 1 January of `now`'s year."""
    return CatalogueVersion(1, dt.date(now.year, 1, 1), {i.code: i for i in ITEMS})


def provision(home: Path, database: Path, now: dt.datetime) -> list[str]:
    """Whatever medical reference data the demo lacks; returns what was created."""
    engine = sqlite_engine(database)
    reference = ReferenceData(engine)
    micros = int(now.timestamp() * 1_000_000)
    created = []
    catalogue = catalogue_version(now)
    digest = hashlib.sha256(repr(sorted(catalogue.items)).encode()).hexdigest()
    if reference.add_catalogue(catalogue, digest, micros, "demo"):
        created.append(f"catalogue v1 ({len(ITEMS)} items)")
    policy_text = EXAMPLE.replace(f"year = {parse_policy(EXAMPLE).year}", f"year = {now.year}")
    try:
        reference.set_policy(policy_text, micros, "demo")
        created.append(f"policy {now.year}")
    except ValueError:
        pass  # this year's policy is stored already
    credentials = home / CREDENTIALS_FILE
    if not credentials.exists():
        with sqlite3.connect(database) as connection:
            medical = [
                row[0]
                for row in connection.execute(
                    "SELECT id FROM institutions WHERE kind IN ('hospital', 'pharmacy') ORDER BY id"
                )
            ]
        lines = [f"{i} {reference.issue_credential(i, micros)}" for i in medical]
        credentials.touch(mode=0o600)
        credentials.write_text(
            "# institution HIS-token (HTTP Basic user and password)\n" + "\n".join(lines) + "\n"
        )
        created.append(f"HIS credentials for {len(medical)} institutions in {credentials}")
    engine.dispose()
    return created

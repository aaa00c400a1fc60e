"""A HIS bill settled at the owning institution's POS: the reference data and credential, the
HIS API's client calls, and the settlement over the terminal interface."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any

from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
from ledger.medical.policy import EXAMPLE
from ledger.medical.sql_reference import ReferenceData
from ledger.medical.sql_store import sqlite_engine
from messages.private import BillData, CardData
from messages.terminal import (
    Settlement,
    TerminalReply,
)
from tests.support.daemon import (
    Daemon,
    Terminal,
    now,
)

CATALOGUE = CatalogueVersion(
    1,
    now().date().replace(month=1, day=1),
    {
        "A01": CatalogueItem("A01", "阿莫西林胶囊", "盒", 1000, Coverage.A),
        "B02": CatalogueItem("B02", "CT 平扫", "次", 15000, Coverage.B, 2000),
        "C01": CatalogueItem("C01", "滋补膏方", "剂", 5000, Coverage.C),
    },
)


def medical_reference(daemon: Daemon, institution: str) -> str:
    """The catalogue and this year's policy, and the institution's HIS credential."""
    assert daemon.app.stores is not None
    reference = daemon.app.stores.reference
    micros = int(now().timestamp() * 1_000_000)
    reference.add_catalogue(CATALOGUE, "0" * 64, micros, "test")
    reference.set_policy(EXAMPLE.replace("2026", str(now().year)), micros, "test")
    return reference.issue_credential(institution, micros)


async def his_tokens(daemon: Daemon, institutions: list[str]) -> dict[str, str]:
    """The catalogue and this year's policy, and each institution's HIS credential (on the
    daemon's SQLite database)."""
    tokens = {institutions[0]: await asyncio.to_thread(medical_reference, daemon, institutions[0])}
    reference = ReferenceData(sqlite_engine(daemon.home / "medswitch.db"))
    micros = int(now().timestamp() * 1_000_000)
    for institution in institutions[1:]:
        tokens[institution] = reference.issue_credential(institution, micros)
    return tokens


def his_submit(port: int, institution: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/his/v1/bills",
        json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic "
            + base64.b64encode(f"{institution}:{token}".encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def his_get(port: int, institution: str, token: str, bill_id: str) -> dict[str, Any]:
    credentials = base64.b64encode(f"{institution}:{token}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/his/v1/bills/{bill_id}",
        headers={"Authorization": "Basic " + credentials},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


async def settle(
    pos: Terminal, daemon: Daemon, card_no: str, bill_id: str, amount: int
) -> tuple[TerminalReply, BillData | None]:
    assert pos.keys is not None and pos.keys.tdk is not None
    bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
    reply = await pos.exchange(
        Settlement(**pos.envelope(), pan=card_no, amount_fen=amount, card=CardData(), bill=bill)
    )
    if reply.bill is None:
        return reply, None
    return reply, BillData.parse(await pos.hsm.decrypt_data(pos.keys.tdk, reply.bill))

"""The terminal simulators' commands, run through the CLI against a daemon: a TMK both sides
hold, and `medswitch ...` in a thread."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any, NamedTuple

from click.testing import CliRunner, Result

from hsm.des import adjust_parity
from hsm.keys import KeyUsage
from hsm.lmk import Component
from simulators.card import VirtualCard
from simulators.psam import VirtualPsam
from switch.cli import main
from tests.support.daemon import Daemon, now
from tests.support.kiosk import issue_card_with_keys, issue_psam
from tests.support.on_file import CardOnFile, PsamOnFile, first_card, first_psam
from tests.support.settlement import his_submit, medical_reference


async def tmk_file(daemon: Daemon, terminal_id: str, path: Path) -> Path:
    """The same TMK in the centre's HSM and, as a component file, for the terminal's module."""
    clear = adjust_parity(secrets.token_bytes(16))
    await daemon.hsm.form_key(f"tmk/{terminal_id}", KeyUsage.TMK, [Component(clear)], now=now())
    path.write_text(clear.hex().upper() + "\n")
    return path


async def invoke(args: list[str]) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)


class BilledCard(NamedTuple):
    card: CardOnFile
    psam: PsamOnFile
    token: str  # the institution's HIS credential
    bill: dict[str, Any]  # the HIS API's answer to the submission
    card_file: Path  # the card and the PSAM saved for the simulators
    psam_file: Path


PAST_DEDUCTIBLE = {"code": "B02", "quantity": 10, "unit_price_fen": 15000}


async def billed_card(
    daemon: Daemon, tmp: Path, his_bill_no: str, line: dict[str, Any] = PAST_DEDUCTIBLE
) -> BilledCard:
    """The first card with a HIS bill of one ``line`` (by default past the deductible) at the
    first PSAM's institution, the card and the PSAM issued and saved for the simulators."""
    db = daemon.home / "medswitch.db"
    on_file, psam_row = first_card(db), first_psam(db)
    token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
    body = {
        "his_bill_no": his_bill_no,
        "card_no": on_file.card_no,
        "service_date": now().date().isoformat(),
        "lines": [line],
    }
    submitted = await asyncio.to_thread(
        his_submit, daemon.app.http_port, psam_row.institution_id, token, body
    )
    conn, keys = await issue_card_with_keys(daemon, on_file)
    psam_conn = await issue_psam(daemon, psam_row, keys.purchase)
    card_path, psam_path = tmp / "card.json", tmp / "psam.json"
    VirtualCard(conn._card.state, path=card_path)  # type: ignore[attr-defined]
    VirtualPsam(psam_conn._card.state, path=psam_path)  # type: ignore[attr-defined]
    return BilledCard(on_file, psam_row, token, submitted, card_path, psam_path)

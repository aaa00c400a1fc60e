"""`medswitch sim pos` and the card's record book, through the CLI against a real daemon: a
settlement with the visit's department and ICD-10 codes leaves the visit on the card file, and
`book` shows it after the PIN, and that the holder data carry the centre's signature (checked
with the published key given as `--card-sign-key`); codes that do not fit the card are refused
by the centre (30) and nothing is settled or written. (The card is loaded at a kiosk first: its
ED pays.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulators.card import VirtualCard
from simulators.psam import VirtualPsam
from tests.support.card_book import issue_book_cards
from tests.support.daemon import Daemon, now, run
from tests.support.kiosk import KIOSK, issue_psam
from tests.support.on_file import first_card, first_psam
from tests.support.settlement import his_submit, medical_reference
from tests.support.sim import invoke, tmk_file

LINE = {"code": "A01", "quantity": 2, "unit_price_fen": 1000}


def test_a_visit_settled_at_the_cli_pos_is_on_the_card_and_in_its_book(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        on_file, psam_row = first_card(db), first_psam(db)
        institution = psam_row.institution_id
        token = await asyncio.to_thread(medical_reference, daemon, institution)

        def submit(number: str) -> str:
            body = {"his_bill_no": number, "card_no": on_file.card_no,
                    "service_date": now().date().isoformat(), "lines": [LINE]}  # fmt: skip
            answer = his_submit(daemon.app.http_port, institution, token, body)
            return f"{answer['bill_id']} {answer['split']['total_fen']}"

        good, bad = (
            await asyncio.to_thread(submit, "CLI-1"),
            await asyncio.to_thread(submit, "CLI-2"),
        )
        (card,), keys = await issue_book_cards(daemon, [on_file])
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        card_path, psam_path = tmp_path / "card.json", tmp_path / "psam.json"
        (tmp_path / "kiosk.txt").write_text("sign_on\nload 5000\n")
        VirtualCard(card._card.state, path=card_path)  # type: ignore[attr-defined]
        VirtualPsam(psam._card.state, path=psam_path)  # type: ignore[attr-defined]
        kiosk_tmk = await tmk_file(daemon, KIOSK, tmp_path / "kiosk.tmk")
        loaded = await invoke(
            ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(kiosk_tmk),
             "--state", str(tmp_path / "kiosk.json"), "--port", str(daemon.app.terminal_port),
             "--pan", on_file.card_no, "--card", str(card_path), "--script",
             str(tmp_path / "kiosk.txt")]
        )  # fmt: skip
        assert loaded.exit_code == 0, loaded.output
        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        args = ["sim", "pos", "--terminal-id", psam_row.terminal_id, "--institution", institution]
        args += ["--tmk-component", str(tmk), "--state", str(tmp_path / "pos.json")]
        args += ["--psam", str(psam_path), "--pan", on_file.card_no, "--card", str(card_path)]
        args += ["--port", str(daemon.app.terminal_port)]
        assert keys.signing is not None  # the centre's published key: the POS checks the card
        (tmp_path / "centre.pem").write_bytes(await daemon.hsm.public_key(keys.signing))
        args += ["--card-sign-key", f"{keys.signing.version}:{tmp_path / 'centre.pem'}"]
        script = tmp_path / "pos.txt"
        script.write_text(f"sign_on\nsettle_visit {good} IM J45.9,I10\nbook\n")
        result = await invoke([*args, "--script", str(script)])
        assert result.exit_code == 0, result.output
        assert "visit recorded on the card" in result.output
        assert "visits on the card: 1" in result.output
        assert f"{now():%Y%m%d} {institution} IM J45.9,I10 bill {good.split()[0]}" in result.output
        assert len(VirtualCard.load(card_path).state.visits) == 1
        assert f"holder data signed by the centre (key v{keys.signing.version})" in result.output

        script.write_text(f"sign_on\nsettle_visit {bad} IM J45.9,NOTACODE\n")
        result = await invoke([*args, "--script", str(script)])
        assert "settlement refused: 30" in result.output, result.output
        assert len(VirtualCard.load(card_path).state.visits) == 1

    run(tmp_path, scenario)

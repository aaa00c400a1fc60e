"""`medswitch sim pos` when the centre's line comes and goes, scripted through the CLI against a
real daemon: a HIS bill whose self-pay share the card's EP pays (its own debit, TAC and advice);
a purchase with no bill online; then, the centre unreachable, purchases taken offline through
the PSAM within the downloaded limits (one refused above the floor limit), kept on disk across
restarts and uploaded at the next batch settlement. Afterwards both shadows equal the card's
purses, the bill is completed once, nothing is in review. And a card whose ED cannot pay its
bill's share: the settlement is reversed at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger.core import transfer_id
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id
from messages.private import Purse
from simulators import terminal_card
from simulators.card import VirtualCard
from simulators.psam import VirtualPsam
from switch.card_io.connection import DirectConnection
from tests.support.daemon import Daemon, now, run
from tests.support.kiosk import KIOSK, give_ep, issue_card_with_keys, issue_psam
from tests.support.on_file import first_card, first_psam
from tests.support.relay import dead_port
from tests.support.settlement import his_submit, medical_reference
from tests.support.sim import billed_card, invoke, tmk_file

EP_FEN = 9_000


def card_purses(path: Path) -> tuple[int, int]:
    conn = DirectConnection(VirtualCard.load(path))
    conn.connect()
    terminal_card.open_application(conn, "123456")
    return terminal_card.balance(conn, Purse.ED), terminal_card.balance(conn, Purse.EP)


def test_ep_self_pay_and_automatic_offline_fallback(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        on_file, psam_row = first_card(db), first_psam(db)
        token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
        body = {
            "his_bill_no": "HIS-EP-1",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [
                {"code": "A01", "quantity": 2, "unit_price_fen": 1000},
                {"code": "C01", "quantity": 1, "unit_price_fen": 5000},
            ],
        }
        submitted = await asyncio.to_thread(
            his_submit, daemon.app.http_port, psam_row.institution_id, token, body
        )
        bill_id, split = submitted["bill_id"], submitted["split"]
        assert split["self_pay_fen"] >= 5_000
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam_conn = await issue_psam(daemon, psam_row, keys.purchase)
        card_path, psam_path = tmp_path / "card.json", tmp_path / "psam.json"
        card = VirtualCard(conn._card.state, path=card_path)  # type: ignore[attr-defined]
        VirtualPsam(psam_conn._card.state, path=psam_path)  # type: ignore[attr-defined]
        await give_ep(daemon, card, on_file.serial, EP_FEN)
        port = str(daemon.app.terminal_port)
        common = ["--pan", on_file.card_no, "--card", str(card_path), "--timeout", "2"]

        kiosk_script = tmp_path / "kiosk.txt"
        kiosk_script.write_text("sign_on\ninsert\nload 20000\n")
        tmk = await tmk_file(daemon, KIOSK, tmp_path / "kiosk.tmk")
        kiosk_args = ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(tmk)]
        kiosk_args += ["--state", str(tmp_path / "kiosk-state.json"), "--port", port, *common]
        result = await invoke([*kiosk_args, "--script", str(kiosk_script)])
        assert result.exit_code == 0, result.output

        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        pos_args = ["sim", "pos", "--terminal-id", psam_row.terminal_id]
        pos_args += ["--institution", psam_row.institution_id, "--tmk-component", str(tmk)]
        pos_args += ["--state", str(tmp_path / "pos-state.json"), "--psam", str(psam_path)]
        pos_args += common

        async def pos(port: str | int, *lines: str) -> tuple[int, str]:
            script = tmp_path / "pos.txt"
            script.write_text("\n".join(lines) + "\n")
            found = await invoke([*pos_args, "--port", str(port), "--script", str(script)])
            return found.exit_code, found.output

        total = split["total_fen"]
        code, out = await pos(port, "sign_on", f"settle_ep {bill_id} {total}", "purchase 500")
        assert code == 0, out
        assert "pooled fund" in out and "self-pay" in out, out
        assert "from the card's EP (TAC" in out and "card ED debited, advice 00" in out, out
        assert "purchase 5.00 from the card's ED, advice 00" in out, out

        # The centre is down: a restarted POS takes purchases offline within its limits.
        down = dead_port()
        code, out = await pos(down, "purchase 700", "purchase_ep 300", "records")
        assert code == 0, out
        assert out.count("centre unreachable") == 2, out
        assert "offline purchase 7.00 from the card's ED" in out, out
        assert "offline purchase 3.00 from the card's EP" in out, out
        assert "5 record(s)" in out, out
        code, out = await pos(down, "purchase 30000")
        assert code == 1 and "above the offline floor limit 200.00" in out, out
        code, out = await pos(down, "settle_ep HIS-NONE 100")
        assert code == 1 and "the bill is not settled (nothing was sent" in out, out

        # The line is back: the batch settlement uploads every record.
        code, out = await pos(port, "sign_on", "settle_batch", "records")
        assert code == 0, out
        assert "not balanced: uploading every record" in out and "end of upload: 00" in out, out
        assert "0 record(s)" in out

        ledger = daemon.app.ledger
        assert ledger is not None
        ed_id = account_id(K.CARD_ED_SHADOW, on_file.serial)
        ep_id = account_id(K.CARD_EP_SHADOW, on_file.serial)
        found = await ledger.balances([ed_id, ep_id])
        ed, ep = card_purses(card_path)
        assert (found[ed_id].balance_fen, found[ep_id].balance_fen) == (ed, ep)
        personal, self_pay = split["personal_account_fen"], split["self_pay_fen"]
        assert (ed, ep) == (20_000 - personal - 500 - 700, EP_FEN - self_pay - 300)
        pooled = await ledger.lookup_transfers([transfer_id("bill-pooled", bill_id)])
        assert len(pooled) == (1 if split["pooled_fen"] else 0)
        assert await ledger.reviews() == []
        balances = await ledger.all_balances()
        assert sum(b.debits_posted_fen for b in balances) == sum(
            b.credits_posted_fen for b in balances
        )

    run(tmp_path, scenario)


def test_a_card_that_cannot_pay_its_share_has_the_settlement_reversed(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        drug = {"code": "A01", "quantity": 2, "unit_price_fen": 1000}
        on_file, psam_row, _, submitted, card_path, psam_path = await billed_card(
            daemon, tmp_path, "HIS-EMPTY-1", drug
        )  # the card never loaded: ED 0
        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        script = tmp_path / "pos.txt"
        script.write_text(f"sign_on\nsettle {submitted['bill_id']} 2000\n")
        args = ["sim", "pos", "--terminal-id", psam_row.terminal_id, "--tmk-component", str(tmk)]
        args += ["--institution", psam_row.institution_id, "--psam", str(psam_path)]
        args += ["--state", str(tmp_path / "pos-state.json"), "--pan", on_file.card_no]
        args += ["--card", str(card_path), "--port", str(daemon.app.terminal_port)]
        result = await invoke([*args, "--script", str(script)])
        assert result.exit_code == 1, result.output
        assert "the card's ED cannot pay 20.00" in result.output, result.output
        assert "the settlement is reversed (reversal of STAN" in result.output, result.output
        assert "answered 00" in result.output, result.output
        store = daemon.app.medical_store
        assert store is not None
        record = await asyncio.to_thread(store.get, submitted["bill_id"])
        assert record is not None and record.state.value == "reversed"

    run(tmp_path, scenario)

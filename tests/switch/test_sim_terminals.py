"""`medswitch sim pos` and `medswitch sim kiosk` scripted through the CLI against a real daemon
over real sockets: a kiosk loads a virtual card (one load's confirmation lost and recovered by
GET TRANSACTION PROVE), a POS signs on, settles a HIS bill with its advice, voids it, takes
offline purchases and uploads them at batch settlement. Afterwards the card's ED shadow equals
the virtual card's balance."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from click.testing import CliRunner

from ledger.kinds import AccountKind, account_id
from simulators import terminal_card
from simulators.card import VirtualCard
from simulators.card.card import Tear
from simulators.kiosk import Kiosk
from simulators.terminal_link import Endpoint, TerminalLink, TerminalState
from switch.card_io.connection import DirectConnection
from switch.cli import main
from tests.support.daemon import Daemon, run
from tests.support.kiosk import KIOSK, balances, issue_card_with_keys
from tests.support.on_file import first_card
from tests.support.relay import ReplyDropper
from tests.support.settlement import his_get
from tests.support.sim import billed_card, invoke, tmk_file


def card_ed(path: Path) -> int:
    conn = DirectConnection(VirtualCard.load(path))
    conn.connect()
    terminal_card.open_application(conn, "123456")
    return terminal_card.balance(conn)


def test_a_scripted_kiosk_and_pos_day(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, _, submitted, card_path, psam_path = await billed_card(
            daemon, tmp_path, "HIS-SIM-1"
        )
        bill_id, personal = submitted["bill_id"], submitted["split"]["personal_account_fen"]
        port = str(daemon.app.terminal_port)
        common = ["--port", port, "--pan", on_file.card_no, "--card", str(card_path)]

        kiosk_script = tmp_path / "kiosk.txt"
        kiosk_script.write_text(
            f"sign_on\ninsert\nbalance\nload {personal + 10_000}\n"
            "# the card is pulled after CREDIT: the confirmation never goes\n"
            "load_lost 2000\nrecover\nload 1000\nhistory\n"
        )
        tmk = await tmk_file(daemon, KIOSK, tmp_path / "kiosk.tmk")
        kiosk_args = ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(tmk)]
        kiosk_args += ["--state", str(tmp_path / "kiosk-state.json"), *common]
        result = await invoke([*kiosk_args, "--script", str(kiosk_script)])
        assert result.exit_code == 0, result.output
        assert "the card proves the load" in result.output
        assert "centre: personal fund" in result.output
        assert card_ed(card_path) == personal + 13_000
        history = result.output[result.output.index("history: "):]
        assert re.search(r"^  \d{14} load_to_shadow 10\.00$", history, re.MULTILINE), history
        assert re.search(r"^  \d{14} load_into_doubt 10\.00$", history, re.MULTILINE), history

        pos_script = tmp_path / "pos.txt"
        pos_script.write_text(
            f"sign_on\nsettle {bill_id} 150000\nvoid {bill_id}\nsettle_batch\n"
            "offline 1000\noffline 1500\nrecords\nsettle_batch\n"
        )
        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        pos_args = ["sim", "pos", "--terminal-id", psam_row.terminal_id]
        pos_args += ["--institution", psam_row.institution_id, "--tmk-component", str(tmk)]
        pos_args += ["--state", str(tmp_path / "pos-state.json"), "--psam", str(psam_path)]
        result = await invoke([*pos_args, *common, "--script", str(pos_script)])
        assert result.exit_code == 0, result.output
        assert f"bill {bill_id}" in result.output and "voided" in result.output
        out = result.output
        assert "batch 000002: 1 debits, 350.00\nbalanced" in out
        assert "not balanced: uploading every record" in out and "end of upload: 00" in out
        ed = card_ed(card_path)
        assert ed == 13_000 - 1000 - 1500
        shadow, in_doubt, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert (shadow, in_doubt) == (ed, 0)
        ledger = daemon.app.ledger
        assert ledger is not None
        reasons = {item.reason for item in await ledger.reviews()}
        assert reasons == set()  # no bad TAC, no late date, no counter gap, nothing twice

        # The records survived on disk, and the next batch starts empty.
        again = await invoke([*pos_args, *common, "--script", str(_write(tmp_path, "records"))])
        assert again.exit_code == 0 and "0 record(s)" in again.output

    run(tmp_path, scenario)


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "one.txt"
    path.write_text(text + "\n")
    return path


def test_a_bad_script_line_is_named(tmp_path: Path) -> None:
    script = tmp_path / "bad.txt"
    script.write_text("sign_on\nload twelve\n")
    tmk = tmp_path / "tmk"
    tmk.write_text("00" * 16 + "\n")
    args = ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(tmk)]
    args += ["--state", str(tmp_path / "s.json"), "--pan", "1", "--script", str(script)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert f"{script}:2: FEN must be a whole number of fen" in result.output
    script.write_text("dance\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and ":1: unknown command 'dance'" in result.output


def test_a_settlement_without_an_answer_is_reversed_after_a_restart(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        small = {"code": "A01", "quantity": 2, "unit_price_fen": 1000}
        on_file, psam_row, _, submitted, card_path, psam_path = await billed_card(
            daemon, tmp_path, "HIS-SIM-2", small
        )
        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        args = ["sim", "pos", "--terminal-id", psam_row.terminal_id, "--timeout", "1"]
        args += ["--institution", psam_row.institution_id, "--tmk-component", str(tmk)]
        args += ["--state", str(tmp_path / "pos-state.json"), "--psam", str(psam_path)]
        args += ["--pan", on_file.card_no, "--card", str(card_path)]
        dropper = ReplyDropper(daemon.app.terminal_port, keep=3)  # sign-on, parameters, blacklist
        port = await dropper.start()
        try:
            script = _write(tmp_path, f"sign_on\nsettle {submitted['bill_id']} 2000")
            lost = await invoke([*args, "--port", str(port), "--script", str(script)])
        finally:
            await dropper.stop()
        assert lost.exit_code == 0, lost.output
        assert "the reversal is stored" in lost.output and "not answered" in lost.output
        script = _write(tmp_path, "sign_on")
        args += ["--port", str(daemon.app.terminal_port), "--script", str(script)]
        restarted = await invoke(args)
        assert restarted.exit_code == 0, restarted.output
        assert "reversal of STAN" in restarted.output and "answered 00" in restarted.output
        shadow, _, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert shadow == card_ed(card_path) == 0

    run(tmp_path, scenario)


def test_a_bill_paid_in_cash_at_the_pos_is_closed_at_the_centre(tmp_path: Path) -> None:
    """`settle_cash`: the POS settles the bill, takes the personal share in cash instead of from
    the card, and closes the bill at the centre: the pooled share is owed to the institution,
    the card and its shadow are untouched."""

    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, token, submitted, card_path, psam_path = await billed_card(
            daemon, tmp_path, "HIS-SIM-CASH"
        )
        bill_id, split = submitted["bill_id"], submitted["split"]
        assert split["personal_account_fen"] > 0 and split["pooled_fen"] > 0
        tmk = await tmk_file(daemon, psam_row.terminal_id, tmp_path / "pos.tmk")
        args = ["sim", "pos", "--terminal-id", psam_row.terminal_id]
        args += ["--institution", psam_row.institution_id, "--tmk-component", str(tmk)]
        args += ["--state", str(tmp_path / "pos-state.json"), "--psam", str(psam_path)]
        args += ["--pan", on_file.card_no, "--card", str(card_path)]
        args += ["--port", str(daemon.app.terminal_port)]
        script = _write(tmp_path, f"sign_on\nsettle_cash {bill_id} {split['total_fen']}")
        result = await invoke([*args, "--script", str(script)])
        assert result.exit_code == 0, result.output
        assert "collected in cash" in result.output
        assert "bill closed in cash at the centre 00" in result.output
        ledger = daemon.app.ledger
        assert ledger is not None
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        assert payable is not None and payable.balance_fen == split["pooled_fen"]
        shadow, _, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert shadow == card_ed(card_path) == 0
        state = await asyncio.to_thread(
            his_get, daemon.app.http_port, psam_row.institution_id, token, bill_id
        )
        assert state["state"] == "completed"

    run(tmp_path, scenario)


def test_interactive_prompts_name_a_bad_command_and_quit(tmp_path: Path) -> None:
    tmk = tmp_path / "tmk"
    tmk.write_text("00" * 16 + "\n")
    args = ["sim", "pos", "--terminal-id", "P0000001", "--tmk-component", str(tmk)]
    args += ["--state", str(tmp_path / "s.json"), "--pan", "1", "--port", "1"]
    result = CliRunner().invoke(main, args, input="dance\nhelp\nrecords\nquit\n")
    assert result.exit_code == 0, result.output
    assert "POS P0000001>" in result.output and "unknown command 'dance'" in result.output
    assert "batch 000001: 0 record(s)" in result.output
    assert "settle BILL_ID TOTAL_FEN" in result.output  # help: usage and what it does
    assert "settle a HIS bill: personal share from the card's ED" in result.output


def test_a_terminal_loaded_with_another_tmk_is_told_in_one_line(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = first_card(daemon.home / "medswitch.db")
        conn, _ = await issue_card_with_keys(daemon, on_file)
        VirtualCard(conn._card.state, path=tmp_path / "card.json")  # type: ignore[attr-defined]
        await tmk_file(daemon, KIOSK, tmp_path / "centre.tmk")  # the centre's TMK
        other = await tmk_file(daemon, "K0000999", tmp_path / "other.tmk")  # not this kiosk's
        args = ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(other),
                "--state", str(tmp_path / "state.json"), "--pan", on_file.card_no,
                "--card", str(tmp_path / "card.json"), "--port", str(daemon.app.terminal_port)]
        result = await invoke([*args, "--script", str(_write(tmp_path, "sign_on"))])
        assert result.exit_code == 1
        assert result.output == (
            "line 1: sign_on: the working keys of field 62 do not match their check values "
            f"under this terminal's TMK: it holds another TMK than the centre's tmk/{KIOSK} "
            "(load that one's components)\n")

    run(tmp_path, scenario)


def test_a_load_torn_after_the_card_wrote_is_recovered_by_the_cli(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        db = daemon.home / "medswitch.db"
        on_file = first_card(db)
        conn, _ = await issue_card_with_keys(daemon, on_file)
        card_path, state_path = tmp_path / "card.json", tmp_path / "kiosk-state.json"
        card = VirtualCard(conn._card.state, path=card_path)  # type: ignore[attr-defined]
        tmk_path = await tmk_file(daemon, KIOSK, tmp_path / "kiosk.tmk")
        (tmk,) = [r.ref for r in await daemon.store.list(f"tmk/{KIOSK}")]
        endpoint = Endpoint("127.0.0.1", daemon.app.terminal_port)
        link = TerminalLink(
            endpoint, KIOSK, "centre", daemon.hsm, tmk, TerminalState.open(state_path)
        )
        torn = DirectConnection(card)
        torn.connect()
        kiosk = Kiosk(link, torn, pan=on_file.card_no, pin="123456")
        try:
            await kiosk.sign_on()
            card.tear_next(Tear.AFTER_UPDATE)
            assert "pulled" in (await kiosk.load(3_000))[0]
        finally:
            await link.close()
        _, in_doubt, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert in_doubt == 3_000
        args = ["sim", "kiosk", "--terminal-id", KIOSK, "--tmk-component", str(tmk_path)]
        args += ["--state", str(state_path), "--pan", on_file.card_no, "--card", str(card_path)]
        args += ["--port", str(daemon.app.terminal_port)]
        result = await invoke([*args, "--script", str(_write(tmp_path, "sign_on\nrecover"))])
        assert result.exit_code == 0, result.output
        assert "the card proves the load" in result.output
        shadow, in_doubt, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert (shadow, in_doubt) == (card_ed(card_path), 0) == (3_000, 0)

    run(tmp_path, scenario)

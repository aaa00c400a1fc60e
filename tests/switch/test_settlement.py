"""A HIS bill settled at the POS of the institution that owns it: submitted over the daemon's
HIS API, approved over the terminal interface with the bill reference and the split under the
session TDK, then the card's debit confirmed by its TAC."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from ledger.kinds import AccountKind, account_id
from messages.outcome import Outcome
from messages.private import BillData, OriginalData
from messages.terminal import (
    CashClose,
    DebitAdvice,
    Reversal,
    Void,
)
from tests.support.daemon import (
    Daemon,
    Terminal,
    now,
    run,
)
from tests.support.kiosk import (
    card_balance,
    issue_card_with_keys,
    issue_psam,
    kiosk_load,
    pos_purchase,
    signed_on_kiosk,
)
from tests.support.on_file import CardOnFile, PsamOnFile
from tests.support.settlement import his_get, his_submit, medical_reference, settle


def refusal_lines(caplog: pytest.LogCaptureFixture, code: str) -> list[dict[str, Any]]:
    """The message log lines' fields of the terminal's answers with response code ``code``."""
    found = []
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if record.name == "medswitch.terminal" and isinstance(fields, dict):
            found += [fields] if fields.get("rc") == code else []
    return found


def test_his_bill_settled_at_the_owning_institutions_pos(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="medswitch.terminal")

    async def scenario(daemon: Daemon) -> None:
        on_file, psam = daemon.first_card(), daemon.first_psam()
        token = await asyncio.to_thread(medical_reference, daemon, psam.institution_id)
        body = {
            "his_bill_no": "HIS-0001",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [
                {"code": "A01", "quantity": 2, "unit_price_fen": 1000},
                {"code": "B02", "quantity": 1, "unit_price_fen": 15000},
                {"code": "C01", "quantity": 1, "unit_price_fen": 5000},
            ],
        }
        submitted = await asyncio.to_thread(
            his_submit, daemon.app.http_port, psam.institution_id, token, body
        )
        bill_id, split = submitted["bill_id"], submitted["split"]
        async with daemon.terminal(psam.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam.institution_id)
            wrong, _ = await settle(pos, daemon, on_file.card_no, bill_id, 100)
            assert wrong.response_code == Outcome.INVALID_AMOUNT.code
            reply, answer = await settle(pos, daemon, on_file.card_no, bill_id, 22_000)
            assert reply.response_code == "00", reply
            assert answer is not None and answer.bill_id == bill_id
            assert answer.total_fen == 22_000
            assert (answer.personal_fen, answer.pooled_fen, answer.self_pay_fen) == (
                split["personal_account_fen"],
                split["pooled_fen"],
                split["self_pay_fen"],
            )
            assert answer.ed_fen == answer.personal_fen and answer.explanation
            other = daemon.first_card().card_no[:-1] + "0"
            refused, _ = await settle(pos, daemon, other, bill_id, 22_000)
            assert refused.response_code in (Outcome.INVALID_CARD.code, "14")
        async with daemon.terminal("K0000001") as kiosk:  # the centre's kiosk owns no bill
            await signed_on_kiosk(daemon, kiosk)
            foreign, _ = await settle(kiosk, daemon, on_file.card_no, bill_id, 22_000)
            assert foreign.response_code == Outcome.ORIGINAL_NOT_FOUND.code
        # Every refusal's log line says why and names the bill; no card number in either.
        [amount] = refusal_lines(caplog, Outcome.INVALID_AMOUNT.code)
        assert (amount["reason"], amount["bill"]) == ("bill_amount_mismatch", bill_id)
        [missing] = refusal_lines(caplog, Outcome.ORIGINAL_NOT_FOUND.code)
        assert (missing["reason"], missing["bill"]) == ("bill_not_found", bill_id)
        [card] = refusal_lines(caplog, Outcome.INVALID_CARD.code)
        assert card["bill"] == bill_id and card["reason"].startswith("card_")
        assert on_file.card_no not in str([amount, missing, card])
        assert not any("reason" in line for line in refusal_lines(caplog, "00"))

    run(tmp_path, scenario, backend)


def test_settled_bill_completes_once_when_the_card_pays_its_personal_share(
    tmp_path: Path, backend: str
) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row = daemon.first_card(), daemon.first_psam()
        token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
        body = {
            "his_bill_no": "HIS-0002",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [
                {"code": "B02", "quantity": 10, "unit_price_fen": 15000}
            ],  # past the deductible
        }
        submitted = await asyncio.to_thread(
            his_submit, daemon.app.http_port, psam_row.institution_id, token, body
        )
        bill_id, split = submitted["bill_id"], submitted["split"]
        personal, pooled = split["personal_account_fen"], split["pooled_fen"]
        assert personal > 0 and pooled > 0
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal("K0000001") as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, personal + 1_000)
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            reply, answer = await settle(pos, daemon, on_file.card_no, bill_id, 150_000)
            assert reply.response_code == "00" and answer is not None
            assert answer.ed_fen == personal
            data = pos_purchase(conn, psam, on_file, personal, now().replace(tzinfo=None))
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            advice = DebitAdvice(
                **pos.envelope(), pan=on_file.card_no, amount_fen=personal, card=data, bill=bill
            )
            assert (await pos.exchange(advice)).response_code == "00"
            again = replace(advice, **pos.envelope())  # the same debit again (or its upload)
            assert (await pos.exchange(again)).response_code == "00"
        exposed = generate_latest(daemon.app.metrics.registry).decode()
        for operation in ("submit_bill", "approve_bill_async"):  # the medical core, by operation
            assert f'medswitch_medical_seconds_count{{operation="{operation}"}} ' in exposed
        # on either database the bill completes in the ledger's write of its debit
        assert 'medswitch_ledger_seconds_count{operation="post_and_call"} ' in exposed
        assert 'operation="complete_paid_bill_async"' not in exposed
        ledger = daemon.app.ledger
        assert ledger is not None
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        assert payable is not None and payable.balance_fen == personal + pooled
        assert card_balance(conn) == 1_000
        state = await asyncio.to_thread(
            his_get, daemon.app.http_port, psam_row.institution_id, token, bill_id
        )
        assert state["state"] == "completed"  # the accumulators are committed with it

    run(tmp_path, scenario, backend)


async def _submitted_bill(
    daemon: Daemon, his_bill_no: str, quantity: int
) -> tuple[CardOnFile, PsamOnFile, str, str, dict[str, Any]]:
    on_file, psam_row = daemon.first_card(), daemon.first_psam()
    token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
    body = {
        "his_bill_no": his_bill_no,
        "card_no": on_file.card_no,
        "service_date": now().date().isoformat(),
        "lines": [{"code": "B02", "quantity": quantity, "unit_price_fen": 15000}],
    }
    submitted = await asyncio.to_thread(
        his_submit, daemon.app.http_port, psam_row.institution_id, token, body
    )
    return on_file, psam_row, token, submitted["bill_id"], submitted["split"]


def test_reversal_before_the_debit_cancels_the_approval(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, token, bill_id, split = await _submitted_bill(daemon, "HIS-R1", 1)
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            reply, _ = await settle(pos, daemon, on_file.card_no, bill_id, 15_000)
            assert reply.response_code == "00"
            reversal = Reversal(
                stan=f"{pos.stan:06d}",
                terminal_id=pos.terminal_id,
                institution_id=pos.institution_id,
                batch=pos.batch,
                processing_code="000000",
                txn_type="22",
                pan=on_file.card_no,
                amount_fen=15_000,
                bill=bill,
            )
            assert (await pos.exchange(reversal)).response_code == "00"
            again = replace(reversal, repeat=True)  # 0401: the same reversal, repeated
            assert (await pos.exchange(again)).response_code == "00"
            late, _ = await settle(pos, daemon, on_file.card_no, bill_id, 15_000)
            assert late.response_code == Outcome.INVALID_TRANSACTION.code
        state = await asyncio.to_thread(
            his_get, daemon.app.http_port, psam_row.institution_id, token, bill_id
        )
        assert state["state"] == "reversed"
        assert split["total_fen"] == 15_000

    run(tmp_path, scenario, backend)


def test_void_after_the_debit_puts_every_share_back(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, token, bill_id, split = await _submitted_bill(daemon, "HIS-V1", 10)
        personal, pooled = split["personal_account_fen"], split["pooled_fen"]
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        ledger = daemon.app.ledger
        assert ledger is not None
        payable_id = account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        fund_id = account_id(AccountKind.PERSONAL_FUND, on_file.cardholder_id)
        pooled_id = account_id(AccountKind.POOLED_FUND, "centre")
        async with daemon.terminal("K0000001") as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, personal)
        before = await ledger.balances([fund_id, pooled_id])
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            await settle(pos, daemon, on_file.card_no, bill_id, 150_000)
            data = pos_purchase(conn, psam, on_file, personal, now().replace(tzinfo=None))
            advice = DebitAdvice(
                **pos.envelope(), pan=on_file.card_no, amount_fen=personal, card=data, bill=bill
            )
            assert (await pos.exchange(advice)).response_code == "00"
            original = OriginalData(pos.batch, f"{pos.stan - 1:06d}", "0000")
            void = Void(
                **pos.envelope(),
                pan=on_file.card_no,
                amount_fen=150_000,
                original=original,
                bill=bill,
            )
            assert (await pos.exchange(void)).response_code == "00"
        after = await ledger.balances([fund_id, pooled_id, payable_id])
        assert after[payable_id].balance_fen == 0
        assert after[fund_id].balance_fen == before[fund_id].balance_fen + personal
        assert after[pooled_id].balance_fen == before[pooled_id].balance_fen
        assert pooled > 0 and card_balance(conn) == 0  # the card keeps what it paid: nothing
        state = await asyncio.to_thread(
            his_get, daemon.app.http_port, psam_row.institution_id, token, bill_id
        )
        assert state["state"] == "voided"

    run(tmp_path, scenario, backend)


def test_a_settled_bill_closed_in_cash_completes_once(tmp_path: Path, backend: str) -> None:
    """The personal-account share paid in cash instead of by the card (0220, 60.1 = 22): the
    bill completes — the pooled share owed to the institution, the accumulators committed —
    once; a wrong amount, a bill never approved and a second close are answered as such."""

    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, token, bill_id, split = await _submitted_bill(daemon, "HIS-C01", 10)
        personal, pooled = split["personal_account_fen"], split["pooled_fen"]
        assert personal > 0 and pooled > 0

        async def close(pos: Terminal, amount: int) -> str:
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            request = CashClose(**pos.envelope(), pan=on_file.card_no, amount_fen=amount, bill=bill)
            return (await pos.exchange(request)).response_code

        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            assert await close(pos, personal) == "12"  # not approved yet: nothing to close
            reply, _ = await settle(pos, daemon, on_file.card_no, bill_id, split["total_fen"])
            assert reply.response_code == "00"
            assert await close(pos, personal - 1) == Outcome.INVALID_AMOUNT.code
            assert await close(pos, personal) == "00"
            assert await close(pos, personal) == "00"  # again: nothing more, and reviewed
            ledger = daemon.app.ledger
            assert ledger is not None
            payable_id = account_id(
                AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id
            )
            fund_id = account_id(AccountKind.PERSONAL_FUND, on_file.cardholder_id)
            before = await ledger.balances([payable_id, fund_id])
            assert before[payable_id].balance_fen == pooled  # the cash stayed at the counter
            state = await asyncio.to_thread(
                his_get, daemon.app.http_port, psam_row.institution_id, token, bill_id
            )
            assert state["state"] == "completed"
            # Voided with the card reported to have paid nothing: only the pooled share returns.
            assert pos.keys is not None and pos.keys.tdk is not None
            plain = BillData(bill_id=bill_id, ed_fen=0).build()
            void = Void(
                **pos.envelope(),
                pan=on_file.card_no,
                amount_fen=split["total_fen"],
                original=OriginalData(pos.batch, "000001", "0000"),
                bill=await pos.hsm.encrypt_data(pos.keys.tdk, plain),
            )
            assert (await pos.exchange(void)).response_code == "00"
        after = await ledger.balances([payable_id, fund_id])
        assert after[payable_id].balance_fen == 0
        assert after[fund_id].balance_fen == before[fund_id].balance_fen  # no refund of cash
        reviews = sorted(item.reason for item in await ledger.reviews())
        assert reviews == ["cash_close_completed_bill", "void_ed_as_reported"]

    run(tmp_path, scenario, backend)


def test_a_card_debit_after_a_cash_close_is_posted_and_reviewed(
    tmp_path: Path, backend: str
) -> None:
    """The card is the authority: its debit of a personal share already paid in cash is posted
    (and answered 00), the bill is not completed twice, and a person sees it paid twice."""

    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row, _, bill_id, split = await _submitted_bill(daemon, "HIS-C02", 10)
        personal, pooled = split["personal_account_fen"], split["pooled_fen"]
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal("K0000001") as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, personal)
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            reply, _ = await settle(pos, daemon, on_file.card_no, bill_id, split["total_fen"])
            assert reply.response_code == "00"
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            close = CashClose(**pos.envelope(), pan=on_file.card_no, amount_fen=personal, bill=bill)
            assert (await pos.exchange(close)).response_code == "00"
            data = pos_purchase(conn, psam, on_file, personal, now().replace(tzinfo=None))
            advice = DebitAdvice(
                **pos.envelope(), pan=on_file.card_no, amount_fen=personal, card=data, bill=bill
            )
            assert (await pos.exchange(advice)).response_code == "00"
        ledger = daemon.app.ledger
        assert ledger is not None
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        assert payable is not None and payable.balance_fen == pooled + personal  # pooled once
        assert card_balance(conn) == 0
        assert [item.reason for item in await ledger.reviews()] == ["bill_paid_twice"]

    run(tmp_path, scenario, backend)


def test_the_split_answer_carries_every_receipt_line_or_says_how_many_more() -> None:
    """A short bill's explanation goes whole; a long one's (over 255 bytes: the item names are
    Chinese) becomes one short line per bill line, every line shown; a bill too long even for
    that ends with how many lines more and where to see them (the old answer dropped lines
    silently: a receipt showed 1 of 4). The shares are the split's."""
    import datetime as dt
    from dataclasses import replace

    from ledger.medical.accumulators import ZERO
    from ledger.medical.bills import BillRecord, BillState
    from ledger.medical.policy import Category
    from ledger.medical.split import Bill, BillLine, Person, explain, split_bill
    from routing.settlement import EXPLANATION_BYTES_MAX, split_answer
    from tests.support.medical import CATALOGUE as ITEMS
    from tests.support.medical import POLICY

    def record(lines: tuple[BillLine, ...]) -> BillRecord:
        split = split_bill(Bill(lines), ITEMS, POLICY, Person(Category.EMPLOYED), 1, ZERO)
        day = dt.date(2026, 11, 25)
        return BillRecord("b1", "h1", "n1", "c1", "p1", 2026, day, "", Bill(lines), split,
                          BillState.APPROVED, 0, 0, 0)  # fmt: skip

    short = record((BillLine("A01", 1, 1000),))
    answer = split_answer(short)
    assert answer.explanation == "\n".join(explain(short.split))
    assert (answer.bill_id, answer.total_fen, answer.cash_fen) == ("b1", 1000, 0)
    assert (answer.ed_fen, answer.ep_fen) == (
        short.split.personal_account_fen,
        short.split.self_pay_fen,
    )
    assert answer.visit_script is None
    scripted = split_answer(short, b"\x00\xe2\x00\x00")  # with the visit's APPEND RECORD
    assert scripted == replace(answer, visit_script=b"\x00\xe2\x00\x00")
    long = record(tuple(BillLine("A01", n, 1200) for n in range(1, 13)))
    assert len("\n".join(explain(long.split)).encode()) > EXPLANATION_BYTES_MAX
    explanation = split_answer(long).explanation
    assert explanation is not None and len(explanation.encode()) <= EXPLANATION_BYTES_MAX
    shown = explanation.split("\n")
    assert shown == [f"{line.number} A01 {line.amount_fen / 100:.2f}" for line in long.split.lines]
    longer = record(tuple(BillLine("A01", 1, 1200) for _ in range(40)))
    explanation = split_answer(longer).explanation
    assert explanation is not None and len(explanation.encode()) <= EXPLANATION_BYTES_MAX
    *shown, last = explanation.split("\n")
    assert shown == [f"{n} A01 12.00" for n in range(1, len(shown) + 1)]
    assert last == f"+{40 - len(shown)} more lines: bill b1 at the HIS"
    marker = f"+{39 - len(shown)} more lines: bill b1 at the HIS"
    one_more = [*shown, f"{len(shown) + 1} A01 12.00", marker]
    assert len("\n".join(one_more).encode()) > EXPLANATION_BYTES_MAX  # as many as fit
    assert answer == BillData.parse(answer.build())


def test_a_card_date_and_time_is_read_as_the_card_wrote_it_or_refused() -> None:
    """Field 58's yyyymmddhhmmss: each field in its range, the calendar respected, as
    ``datetime(y, mo, d, h, mi, s)`` would have it."""
    import datetime as dt

    from routing.debits import parse_card_datetime

    assert parse_card_datetime("20240229235959") == dt.datetime(2024, 2, 29, 23, 59, 59)
    assert parse_card_datetime("00010101000000") == dt.datetime(1, 1, 1)
    for text in (
        "20250229101500",  # not a leap year
        "20261131101500",
        "20261325101500",
        "20261100101500",
        "00001125101500",
        "20261125240000",
        "20261125106000",
        "20261125101560",
        "2026112510150",
        "2026112510150a",
        "2026-11-25T1015",
    ):
        assert parse_card_datetime(text) is None, text


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


async def _until(test: Any, what: str, limit_s: float = 20.0) -> None:
    """Wait (bounded) until ``test()`` (a coroutine function) holds."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not await test():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_the_writer_process_dies_and_the_daemon_recovers_without_a_restart(
    tmp_path: Path,
) -> None:
    """SQLite's writer process killed (issue 22, finding 1): the ledger fails at once with
    LedgerUnavailable (no hang), the HIS API answers an error at once, /readyz says 503 while
    the writer restarts, the dead child is reaped; then, with the same daemon, a settlement and
    its advice go through and the ledger balances."""

    async def scenario(daemon: Daemon) -> None:
        from ledger.core import Health, LedgerUnavailable
        from ledger.writer.process import ProcessWriter, Restarts

        ledger = daemon.app.ledger
        assert ledger is not None
        writer = ledger.writer  # type: ignore[attr-defined]
        assert isinstance(writer, ProcessWriter), "on SQLite the daemon writes from a process"
        writer._restarts = Restarts(delays_s=(1.5,))  # a window long enough to look into
        port = daemon.app.http_port
        on_file, psam_row, token, bill_id, split = await _submitted_bill(daemon, "HIS-KILL", 10)
        personal, pooled = split["personal_account_fen"], split["pooled_fen"]
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal("K0000001") as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, personal + 1_000)
        assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200

        dead = writer._process
        assert dead is not None
        os.kill(dead.pid, signal.SIGKILL)
        await _until(lambda: _health_is(ledger, Health.RESTARTING), "the loss to be seen")
        started = asyncio.get_running_loop().time()
        with pytest.raises(LedgerUnavailable):
            await ledger.all_balances()
        body = {
            "his_bill_no": "HIS-DOWN",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [{"code": "A01", "quantity": 1, "unit_price_fen": 1000}],
        }
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(his_submit, port, psam_row.institution_id, token, body)
        assert refused.value.code >= 500
        status, text = await asyncio.to_thread(_get, port, "/readyz")
        assert status == 503 and "ledger restarting" in text
        assert asyncio.get_running_loop().time() - started < 1.5  # failures, not waits

        await _until(lambda: _ready(port), "/readyz to answer 200 again")
        assert dead.poll() == -signal.SIGKILL and writer.restarted == 1  # reaped, replaced
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            reply, answer = await settle(pos, daemon, on_file.card_no, bill_id, 150_000)
            assert reply.response_code == "00" and answer is not None
            data = pos_purchase(conn, psam, on_file, personal, now().replace(tzinfo=None))
            assert pos.keys is not None and pos.keys.tdk is not None
            bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
            advice = DebitAdvice(
                **pos.envelope(), pan=on_file.card_no, amount_fen=personal, card=data, bill=bill
            )
            assert (await pos.exchange(advice)).response_code == "00"
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        assert payable is not None and payable.balance_fen == personal + pooled
        everything = await ledger.all_balances()
        debits = sum(b.debits_posted_fen for b in everything)
        assert debits == sum(b.credits_posted_fen for b in everything) and debits > 0

    run(tmp_path, scenario, "sqlite")


async def _health_is(ledger: Any, health: Any) -> bool:
    return bool(ledger.health() is health)


async def _ready(port: int) -> bool:
    return (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200

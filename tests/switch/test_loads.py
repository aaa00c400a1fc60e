"""Kiosk ED loads end to end: a personalised virtual card, the daemon on 127.0.0.1, the ledger.

After every flow the card's ED balance equals its shadow in the ledger once the card has proven
each attempt, and the personal fund paid exactly what the card received."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.kinds import AccountKind, account_id
from messages import terminal_table
from messages.outcome import Outcome
from messages.terminal import BalanceInquiry, DebitAdvice, EdLoad
from simulators.card.card import Tear
from switch.card_io.connection import CardRemovedError
from switch.logs import JsonFormatter
from tests.support.daemon import (
    CODEC,
    Daemon,
    now,
    run,
)
from tests.support.kiosk import (
    KIOSK,
    balances,
    card_balance,
    issue_card,
    issue_card_with_keys,
    issue_psam,
    kiosk_load,
    pos_purchase,
    signed_on_kiosk,
)


def test_kiosk_load_with_mac1_mac2_and_tac(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        _, _, fund_before = await balances(daemon, on_file.serial, on_file.cardholder_id)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            reply, confirmation = await kiosk_load(kiosk, conn, on_file, 12_345)
            assert reply.response_code == "00"
            assert confirmation is not None and confirmation.response_code == "00"
        assert card_balance(conn) == 12_345
        shadow, doubt, fund = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert (shadow, doubt, fund_before - fund) == (12_345, 0, 12_345)
        seen.append(on_file.card_no)

    run(tmp_path, scenario, backend)
    # Everything the daemon logged, as its JSON lines: the PAN only masked (first 6, last 4).
    (pan,) = seen
    lines = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert pan not in lines
    assert f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}" in lines


def test_lost_confirmation_is_resolved_by_the_cards_next_load(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        _, _, fund_before = await balances(daemon, on_file.serial, on_file.cardholder_id)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, 5_000, confirm=False)
            shadow, doubt, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
            assert (shadow, doubt) == (0, 5_000)  # in doubt: the card has not spoken yet
            await kiosk_load(kiosk, conn, on_file, 700)
        assert card_balance(conn) == 5_700
        shadow, doubt, fund = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert (shadow, doubt, fund_before - fund) == (5_700, 0, 5_700)

    run(tmp_path, scenario, backend)


def test_load_refusals_move_no_money(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        before = await balances(daemon, on_file.serial, on_file.cardholder_id)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            fund = before[2]
            reply, _ = await kiosk_load(kiosk, conn, on_file, fund + 1)
            assert reply.response_code == Outcome.INSUFFICIENT_FUNDS.code
            unknown = type(on_file)("6212349999999999", on_file.serial, on_file.cardholder_id)
            reply, _ = await kiosk_load(kiosk, conn, unknown, 100)
            assert reply.response_code == Outcome.INVALID_CARD.code
            assert card_balance(conn) == 0
            daemon.sql("UPDATE cards SET status = 'lost' WHERE card_no = ?", (on_file.card_no,))
            reply, _ = await kiosk_load(kiosk, conn, on_file, 100)
            assert reply.response_code == Outcome.LOST_CARD.code
            assert reply.card is not None and reply.card.issuer_script is not None
            # The block script was MACed for this card's challenge: the card is now blocked.
            _, sw = conn.transmit(bytes.fromhex("805C000104"))
            assert sw == 0x6A81  # function locked
        assert await balances(daemon, on_file.serial, on_file.cardholder_id) == before

    run(tmp_path, scenario, backend)


def test_a_retransmitted_load_gets_the_original_reply_and_posts_nothing(
    tmp_path: Path, backend: str
) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        _, _, fund_before = await balances(daemon, on_file.serial, on_file.cardholder_id)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            sent: list[bytes] = []
            original_send = kiosk.send

            async def recording_send(payload: bytes) -> bytes:
                sent.append(payload)
                return await original_send(payload)

            kiosk.send = recording_send  # type: ignore[method-assign]
            await kiosk_load(kiosk, conn, on_file, 800, confirm=False)
            load_request = sent[-1]
            first_reply = await original_send(load_request)  # the POS repeats it
            again = await original_send(load_request)
            assert first_reply == again
            # The same key (terminal, batch, STAN, class) with other content, properly MACed:
            repeated = terminal_table.parse(CODEC.decode(load_request))
            assert isinstance(repeated, EdLoad)
            different = await kiosk.exchange(replace(repeated, amount_fen=801, mac=None))
            assert different.response_code == Outcome.DUPLICATE.code
        _, doubt, fund = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert (doubt, fund_before - fund) == (800, 800)

    run(tmp_path, scenario, backend)


def test_balance_inquiry_shows_fund_and_shadows(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, 3_000)
            reply = await kiosk.exchange(BalanceInquiry(**kiosk.envelope(), pan=on_file.card_no))
        assert reply.response_code == "00" and reply.balances is not None
        shown = {b.account_type: b.amount_fen for b in reply.balances}
        _, _, fund = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert shown == {"91": fund, "92": 3_000, "93": 0}

    run(tmp_path, scenario, backend)


def test_card_debit_advice_posts_once_and_a_forged_tac_never(tmp_path: Path, backend: str) -> None:
    async def scenario(daemon: Daemon) -> None:
        on_file, psam_row = daemon.first_card(), daemon.first_psam()
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, 10_000)
        data = pos_purchase(conn, psam, on_file, 2_500, now().replace(tzinfo=None))
        assert card_balance(conn) == 7_500
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            advice = DebitAdvice(**pos.envelope(), pan=on_file.card_no, amount_fen=2_500, card=data)
            assert (await pos.exchange(advice)).response_code == "00"
            again = replace(advice, **pos.envelope())  # the upload or a new STAN: same debit
            assert (await pos.exchange(again)).response_code == "00"
            forged = replace(
                advice, **pos.envelope(), card=replace(data, psam_serial=999, tac=b"\0\0\0\0")
            )
            answer = await pos.exchange(forged)
            assert answer.response_code == Outcome.SECURITY_FAILURE.code
        shadow, _, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert shadow == card_balance(conn) == 7_500
        ledger = daemon.app.ledger
        assert ledger is not None
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        assert payable is not None and payable.balance_fen == 2_500
        reasons = [item.reason for item in await ledger.reviews()]
        assert "bad_tac" in reasons

    run(tmp_path, scenario, backend)


@pytest.mark.parametrize("tear", [Tear.BEFORE_UPDATE, Tear.AFTER_UPDATE], ids=lambda t: t.value)
def test_a_torn_load_is_settled_by_the_cards_retry(
    tmp_path: Path, tear: Tear, backend: str
) -> None:
    """Power lost in CREDIT FOR LOAD, before or after the card wrote its balance: the retry's
    MAC1 (counter and balance) proves which, and the card, shadow and fund agree after it."""

    async def scenario(daemon: Daemon) -> None:
        on_file = daemon.first_card()
        conn = await issue_card(daemon, on_file)
        _, _, fund_before = await balances(daemon, on_file.serial, on_file.cardholder_id)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            conn._card.tear_next(tear)  # type: ignore[attr-defined]
            with pytest.raises(CardRemovedError):
                await kiosk_load(kiosk, conn, on_file, 4_000)
            conn.connect()  # the cardholder puts the card back and the kiosk retries
            reply, confirmation = await kiosk_load(kiosk, conn, on_file, 4_000)
            assert reply.response_code == "00"
            assert confirmation is not None and confirmation.response_code == "00"
        expected = 8_000 if tear is Tear.AFTER_UPDATE else 4_000
        assert card_balance(conn) == expected
        shadow, doubt, fund = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert (shadow, doubt, fund_before - fund) == (expected, 0, expected)

    run(tmp_path, scenario, backend)

"""Cancel 注销 and card replacement at a bank counter, over real sockets: the old card is
blacklisted and refused at once, a replacement must be an active card of the same cardholder
on file, the new card takes ordinary loads, and after the grace period the old card's shadows
go back (ED → personal fund, EP → refunds payable) once."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import uvloop

from hsm import pinblock
from hsm.des import Des
from ledger.kinds import AccountKind, account_id
from simulators.bank import BankAcquirer
from switch.bank.cards import SqliteCardStatus, sweep_ended_cards
from tests.support.bank import BANK, BankDaemon, bank_daemon
from tests.support.daemon import now
from tests.support.kiosk import PIN
from tests.support.on_file import CardOnFile
from tests.support.scripted_day import cards_on_file, issue_cards

NEW_CARD = "3100009999999995"
NEW_SERIAL = "00000000000000099999"


def add_replacement_card(database: Path, old: CardOnFile) -> CardOnFile:
    """The replacement card as issuance leaves it on file: same cardholder, active."""
    with sqlite3.connect(database) as connection:
        expiry, version = connection.execute(
            "SELECT expiry, key_version FROM cards WHERE card_no = ?", (old.card_no,)
        ).fetchone()
        connection.execute(
            "INSERT INTO cards (card_no, application_serial, cardholder_id, key_version, status,"
            " expiry) VALUES (?, ?, ?, ?, 'active', ?)",
            (NEW_CARD, NEW_SERIAL, old.cardholder_id, version, expiry),
        )
    return CardOnFile(NEW_CARD, NEW_SERIAL, old.cardholder_id)


def card_row(database: Path, card_no: str) -> tuple[str, str | None, int | None]:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT status, replaced_by, cancelled_at_us FROM cards WHERE card_no = ?", (card_no,)
        ).fetchone()
    return row[0], row[1], row[2]


def blacklisted(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT application_serial, reason FROM blacklist WHERE removed_version IS NULL"
        )
        return {serial: reason for serial, reason in rows}


def test_cancel_and_replacement_at_the_counter(tmp_path: Path) -> None:
    async def scenario(bank: BankDaemon) -> None:
        database = bank.database
        old, other = cards_on_file(database, 2)
        new = add_replacement_card(database, old)
        (old_conn, new_conn), _ = await issue_cards(bank.daemon, [old, new])
        counter = await BankAcquirer.connect(
            "127.0.0.1", bank.app.bank_port, bank.daemon.hsm, bank.zak_in, BANK, clock=now
        )
        zpk = Des(bank.clear_zpk)
        try:
            assert (await counter.sign_on()).response_code == "00"
            reply, _ = await counter.ed_load(old_conn, old.card_no, PIN, 3_000)
            assert reply.response_code == "00"
            block = zpk.encrypt_ecb(pinblock.encode_format0(PIN, old.card_no))
            reply, _ = await counter.ep_load(old_conn, old.card_no, PIN, 2_000, block)
            assert reply.response_code == "00"
            ledger = bank.app.ledger
            assert ledger is not None
            fund = account_id(AccountKind.PERSONAL_FUND, old.cardholder_id)
            (fund_before,) = await bank.balances(fund)

            assert (await counter.card_service("cancel", other.card_no)).response_code == "00"
            assert card_row(database, other.card_no)[0] == "cancelled"
            assert blacklisted(database)[other.serial] == "cancelled"
            assert (await counter.inquiry(other.card_no)).response_code == "62"
            assert (await counter.card_service("cancel", other.card_no)).response_code == "62"
            assert (await counter.card_service("cancel", "9" * 16)).response_code == "14"

            replace = counter.card_service
            assert (await replace("card_replacement", old.card_no, "9" * 16)).response_code == "14"
            refused = await replace("card_replacement", old.card_no, other.card_no)
            assert refused.response_code == "57"  # another cardholder's card
            assert (await replace("card_replacement", old.card_no)).response_code == "30"
            assert card_row(database, old.card_no)[0] == "active"  # nothing changed
            done = await replace("card_replacement", old.card_no, new.card_no)
            assert done.response_code == "00"
            status, replaced_by, ended_us = card_row(database, old.card_no)
            assert (status, replaced_by) == ("replaced", new.card_no) and ended_us
            assert blacklisted(database)[old.serial] == "replaced"
            reply, _ = await counter.ed_load(old_conn, old.card_no, PIN, 1_000)
            assert reply.response_code == "62"  # the old card is refused at once
            reply, confirmation = await counter.ed_load(new_conn, new.card_no, PIN, 1_000)
            assert reply.response_code == "00" and confirmation is not None

            cards = SqliteCardStatus(database)
            assert await sweep_ended_cards(cards, ledger, now()) == []  # within the grace
            later = now() + timedelta(days=31)
            swept = dict(await sweep_ended_cards(cards, ledger, later))
            assert swept == {old.serial: "POSTED"}  # the cancelled card had nothing on it
            assert await sweep_ended_cards(cards, ledger, later) == []  # once
            shadows = await bank.balances(
                account_id(AccountKind.CARD_ED_SHADOW, old.serial),
                account_id(AccountKind.CARD_EP_SHADOW, old.serial),
                account_id(AccountKind.REFUNDS_PAYABLE, old.cardholder_id),
                fund,
            )
            assert shadows == [0, 0, 2_000, fund_before + 3_000 - 1_000]  # less the new load
        finally:
            await counter.close()

    async def main() -> None:
        async with bank_daemon(tmp_path) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=180))

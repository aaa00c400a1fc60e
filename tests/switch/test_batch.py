"""The batch protocol end to end over the wire: offline purchases on a virtual card through a
PSAM, their advice and batch upload (0320), the end of upload, and batch settlement (0500).

After it all the card's ED shadow equals the card's balance, each debit posted once, the forged
record is in review and unposted, and the ledger sums to zero."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from ledger import events as ev
from ledger.kinds import AccountKind, account_id
from ledger.medical.policy import EXAMPLE
from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import ReferenceData, SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from ledger.memory import MemoryLedger
from messages.outcome import Outcome
from messages.private import CardData, SettlementTotals
from messages.terminal import (
    BatchSettlement,
    BatchSettlementReply,
    BatchUploadEnd,
    BatchUploadRecord,
    DebitAdvice,
)
from routing.purchases import debit_transfer
from tests.support.daemon import Daemon, Terminal, now, run
from tests.support.kiosk import (
    KIOSK,
    balances,
    card_balance,
    issue_card_with_keys,
    issue_psam,
    kiosk_load,
    pos_purchase,
    signed_on_kiosk,
)
from tests.support.on_file import first_card, first_psam
from tests.support.scripted_day import ledger_sums as ledger_state

AMOUNTS = (1_000, 2_000, 3_000)


async def upload(pos: Terminal, pan: str, records: list[CardData]) -> list[str]:
    codes = []
    for data in records:
        assert data.amount_fen is not None
        message = BatchUploadRecord(
            **pos.envelope(), pan=pan, amount_fen=data.amount_fen, card=data
        )
        codes.append((await pos.exchange(message)).response_code)
    return codes


async def settle(pos: Terminal, totals: SettlementTotals) -> int:
    reply = await pos.exchange(BatchSettlement(**pos.envelope(), totals=totals))
    assert isinstance(reply, BatchSettlementReply) and reply.totals is not None, reply
    assert reply.response_code == "00"
    return reply.totals.result


def test_batch_upload_posts_each_debit_once_and_settles(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        ledger = daemon.app.ledger
        assert ledger is not None
        db = daemon.home / "medswitch.db"
        on_file, psam_row = first_card(db), first_psam(db)
        policy = EXAMPLE.replace("2026", str(now().year))
        ReferenceData(sqlite_engine(db)).set_policy(policy, int(now().timestamp() * 1e6), "test")
        conn, keys = await issue_card_with_keys(daemon, on_file)
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, 20_000)
        when = now().replace(tzinfo=None)
        records = [pos_purchase(conn, psam, on_file, amount, when) for amount in AMOUNTS]
        forged = replace(records[0], psam_serial=999, tac=b"\0\0\0\0", amount_fen=500)
        total = SettlementTotals(sum(AMOUNTS), len(AMOUNTS), 0, 0)
        pan = on_file.card_no
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            # The first purchase was online: its advice posts it.
            advice = DebitAdvice(**pos.envelope(), pan=pan, amount_fen=1_000, card=records[0])
            assert (await pos.exchange(advice)).response_code == "00"
            # The centre knows one debit of three: not balanced, so the POS uploads them all.
            assert await settle(pos, total) == 2
            codes = await upload(pos, pan, [*records, forged])
            assert codes == ["00", "00", "00", Outcome.SECURITY_FAILURE.code]
            end = await pos.exchange(BatchUploadEnd(**pos.envelope(), count="0004"))
            assert end.response_code == "00"
            after_first = await ledger_state(daemon)
            # The same batch uploaded twice changes nothing.
            assert await upload(pos, pan, [*records, forged]) == codes
            assert await ledger_state(daemon) == after_first
            assert await settle(pos, total) == 1
            assert await settle(pos, replace(total, debit_fen=total.debit_fen + 1)) == 2
            assert await settle(pos, replace(total, debit_count=4)) == 2
            short = await pos.exchange(BatchUploadEnd(**pos.envelope(), count="0003"))
            assert short.response_code == "00"
        assert card_balance(conn) == 20_000 - sum(AMOUNTS)
        shadow, _, _ = await balances(daemon, on_file.serial, on_file.cardholder_id)
        assert shadow == card_balance(conn)
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        assert payable is not None and payable.balance_fen == sum(AMOUNTS)
        history = await ledger.history(account_id(AccountKind.CARD_ED_SHADOW, on_file.serial))
        debits = [p for p in history if p.transfer.code == ev.TransferCode.CARD_DEBIT]
        assert sorted(p.transfer.amount_fen for p in debits) == list(AMOUNTS)
        forged_id = ev.card_debit_id(psam_row.terminal_no, 999)
        assert forged_id not in await ledger.lookup_transfers([forged_id])
        reviews = {(item.reason, item.reference) for item in await ledger.reviews()}
        assert ("bad_tac", f"card-debit|{psam_row.terminal_no}|999") in reviews
        assert any(reason == "upload_count_mismatch" for reason, _ in reviews)
        assert not any(reason == "offline_not_counted" for reason, _ in reviews)
        engine = sqlite_engine(db)
        medical = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
        holder = medical.directory.cardholder_by_serial(on_file.serial)
        assert holder is not None
        committed, _ = medical.accumulators(holder.person_id, when.year)
        assert committed.personal_account_fen == sum(AMOUNTS)  # counted once each

    run(tmp_path, scenario)


def test_a_windows_debit_is_the_very_transfer_the_advice_event_posts() -> None:
    """routing.purchases posts a window's debits in one submission: each is the transfer
    ledger.events.post_card_debit posts, so an advice and an upload meet on one id and data."""

    async def check() -> None:
        ledger = MemoryLedger()
        for purse, bill in ((ev.Purse.ED, "B1"), (ev.Purse.EP, None)):
            debit = ev.CardDebit(
                "000000000001", 7, "3100000000000001", purse, 250, "i1", "i2", bill
            )
            result = await ev.post_card_debit(ledger, debit)
            (posted,) = (await ledger.lookup_transfers(result.transfer_ids)).values()
            assert posted.transfer == debit_transfer(debit)
            ledger = MemoryLedger()

    asyncio.run(check())

"""A HIS bill whose card debit reaches the centre before its advice: an upload naming its bill
(field 63) completes it once, whatever comes after; an upload with no bill (an older POS) posts
the debit as an offline purchase, then the advice the
POS sends again completes the bill — pooled share and accumulators — once, whatever follows;
the other order: the advice first, the upload after, counts nothing twice; and a bill with no
personal-account share completes when its EP self-pay debit is confirmed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ledger.core import transfer_id
from ledger.kinds import AccountKind, account_id
from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from messages.private import BillData, CardData, Purse
from messages.terminal import BatchUploadRecord, DebitAdvice
from simulators import terminal_card
from tests.support.daemon import Daemon, Terminal, now, run
from tests.support.kiosk import (
    KIOSK,
    PIN,
    give_ep,
    issue_psam,
    kiosk_load,
    pos_purchase,
    signed_on_kiosk,
)
from tests.support.on_file import first_psam
from tests.support.scripted_day import cards_on_file, issue_cards
from tests.support.scripted_day import ledger_sums as ledger_state
from tests.support.settlement import his_submit, medical_reference, settle


async def send(
    pos: Terminal, pan: str, data: CardData, bill_id: str | None, upload: bool = False
) -> str:
    """An advice (with its bill) when ``bill_id`` is given and not ``upload``; else an upload
    record, naming its bill in field 63 when ``bill_id`` is given."""
    assert data.amount_fen is not None and pos.keys is not None and pos.keys.tdk is not None
    bill = None
    if bill_id is not None:
        bill = await pos.hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=bill_id).build())
    if bill_id is None or upload:
        message: BatchUploadRecord | DebitAdvice = BatchUploadRecord(
            **pos.envelope(), pan=pan, amount_fen=data.amount_fen, card=data, bill=bill
        )
    else:
        message = DebitAdvice(
            **pos.envelope(), pan=pan, amount_fen=data.amount_fen, card=data, bill=bill
        )
    return (await pos.exchange(message)).response_code


def test_a_bill_completes_once_whether_its_upload_or_its_advice_comes_first(
    tmp_path: Path,
) -> None:
    async def scenario(daemon: Daemon) -> None:
        ledger = daemon.app.ledger
        assert ledger is not None
        db = daemon.home / "medswitch.db"
        cards, psam_row = cards_on_file(db, 2), first_psam(db)
        token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
        bills = []
        for n, on_file in enumerate(cards):  # one bill each: both above the deductible
            body = {
                "his_bill_no": f"HIS-UP-{n}",
                "card_no": on_file.card_no,
                "service_date": now().date().isoformat(),
                "lines": [{"code": "B02", "quantity": 10, "unit_price_fen": 15000}],
            }
            bills.append(
                await asyncio.to_thread(
                    his_submit, daemon.app.http_port, psam_row.institution_id, token, body
                )
            )
        assert all(b["split"]["pooled_fen"] and b["split"]["personal_account_fen"] for b in bills)
        body["his_bill_no"] = "HIS-UP-EP"  # card 1's second bill: its deductible is met
        only_ep = await asyncio.to_thread(
            his_submit, daemon.app.http_port, psam_row.institution_id, token, body
        )
        assert only_ep["split"]["personal_account_fen"] == 0 and only_ep["split"]["pooled_fen"]
        conns, keys = await issue_cards(daemon, cards)
        await give_ep(daemon, conns[1]._card, cards[1].serial, 100_000)  # type: ignore[attr-defined]
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            for conn, on_file in zip(conns, cards, strict=True):
                await kiosk_load(kiosk, conn, on_file, 100_000)
        when = now().replace(tzinfo=None)
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            debits = []
            for bill, conn, on_file in zip(bills, conns, cards, strict=True):
                reply, split = await settle(pos, daemon, on_file.card_no, bill["bill_id"], 150_000)
                assert reply.response_code == "00" and split is not None and split.ed_fen
                debits.append(pos_purchase(conn, psam, on_file, split.ed_fen, when))
            pans = [c.card_no for c in cards]
            first, second = (b["bill_id"] for b in bills)
            # Bill 1: its advice is lost; the upload comes first, then the advice again.
            assert await send(pos, pans[0], debits[0], None) == "00"
            assert await send(pos, pans[0], debits[0], first) == "00"
            assert await send(pos, pans[0], debits[0], first) == "00"  # once more: nothing
            # Bill 2: the advice first, the upload after.
            assert await send(pos, pans[1], debits[1], second) == "00"
            assert await send(pos, pans[1], debits[1], None) == "00"
            # Bill 3 has no personal-account share: its EP self-pay debit completes it.
            reply, split = await settle(pos, daemon, pans[1], only_ep["bill_id"], 150_000)
            assert reply.response_code == "00" and split is not None and split.ep_fen
            terminal_card.open_application(conns[1], PIN)
            serial = bytes.fromhex(cards[1].serial).rjust(10, b"\0")
            ep = terminal_card.purchase(conns[1], psam, serial, split.ep_fen, when, Purse.EP)
            assert await send(pos, pans[1], ep, only_ep["bill_id"]) == "00"
            bills.append(only_ep)

        pooled = [transfer_id("bill-pooled", b["bill_id"]) for b in bills]
        posted = await ledger.lookup_transfers(pooled)
        assert [posted[p].transfer.amount_fen for p in pooled] == [
            b["split"]["pooled_fen"] for b in bills
        ]
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        shares = sum(b["split"]["pooled_fen"] + b["split"]["personal_account_fen"] for b in bills)
        assert payable is not None and payable.balance_fen == shares
        reviews = {(i.reason, i.reference) for i in await ledger.reviews()}
        assert reviews == {("bill_after_upload", f"bill|{first}")}
        engine = sqlite_engine(db)
        medical = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
        states = [medical.get_bill(b["bill_id"]).state.value for b in bills]  # type: ignore[union-attr]
        assert states == ["completed"] * 3
        counted = []
        for on_file in cards:
            holder = medical.directory.cardholder_by_serial(on_file.serial)
            assert holder is not None
            committed, _ = medical.accumulators(holder.person_id, when.year)
            counted.append(committed.personal_account_fen)
        shares = [b["split"]["personal_account_fen"] for b in bills[:2]]
        # Bill 2's debit is counted once (by its bill); bill 1's twice (its upload counted it as
        # an offline purchase before its advice came): the review above names it.
        assert counted == [2 * shares[0], shares[1]]

    run(tmp_path, scenario)


def test_an_upload_naming_its_bill_completes_it_before_its_lost_advice(tmp_path: Path) -> None:
    """The advice is lost; the upload names the bill (field 63): the bill completes, its pooled
    share posted once and the accumulators counted once (by the bill, not as an offline
    purchase); the upload again and the late advice change nothing, and nothing is reviewed."""

    async def scenario(daemon: Daemon) -> None:
        ledger = daemon.app.ledger
        assert ledger is not None
        db = daemon.home / "medswitch.db"
        (on_file,), psam_row = cards_on_file(db, 1), first_psam(db)
        token = await asyncio.to_thread(medical_reference, daemon, psam_row.institution_id)
        body = {
            "his_bill_no": "HIS-UPBILL-0",
            "card_no": on_file.card_no,
            "service_date": now().date().isoformat(),
            "lines": [{"code": "B02", "quantity": 10, "unit_price_fen": 15000}],
        }
        bill = await asyncio.to_thread(
            his_submit, daemon.app.http_port, psam_row.institution_id, token, body
        )
        assert bill["split"]["pooled_fen"] and bill["split"]["personal_account_fen"]
        (conn,), keys = await issue_cards(daemon, [on_file])
        psam = await issue_psam(daemon, psam_row, keys.purchase)
        async with daemon.terminal(KIOSK) as kiosk:
            await signed_on_kiosk(daemon, kiosk)
            await kiosk_load(kiosk, conn, on_file, 100_000)
        when = now().replace(tzinfo=None)
        bill_id, pan = bill["bill_id"], on_file.card_no
        async with daemon.terminal(psam_row.terminal_id) as pos:
            await signed_on_kiosk(daemon, pos, psam_row.institution_id)
            reply, split = await settle(pos, daemon, pan, bill_id, 150_000)
            assert reply.response_code == "00" and split is not None and split.ed_fen
            debit = pos_purchase(conn, psam, on_file, split.ed_fen, when)
            assert await send(pos, pan, debit, bill_id, upload=True) == "00"
            after_upload = await ledger_state(daemon)
            assert await send(pos, pan, debit, bill_id, upload=True) == "00"  # uploaded twice
            assert await send(pos, pan, debit, bill_id) == "00"  # the late advice
            assert await ledger_state(daemon) == after_upload

        pooled = transfer_id("bill-pooled", bill_id)
        posted = await ledger.lookup_transfers([pooled])
        assert posted[pooled].transfer.amount_fen == bill["split"]["pooled_fen"]
        payable = await ledger.balance(
            account_id(AccountKind.INSTITUTION_PAYABLE_INSURANCE, psam_row.institution_id)
        )
        shares = bill["split"]["pooled_fen"] + bill["split"]["personal_account_fen"]
        assert payable is not None and payable.balance_fen == shares
        assert await ledger.reviews() == []
        engine = sqlite_engine(db)
        medical = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
        record = medical.get_bill(bill_id)
        assert record is not None and record.state.value == "completed"
        holder = medical.directory.cardholder_by_serial(on_file.serial)
        assert holder is not None
        committed, _ = medical.accumulators(holder.person_id, when.year)
        assert committed.personal_account_fen == bill["split"]["personal_account_fen"]

    run(tmp_path, scenario)

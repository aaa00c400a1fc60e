"""A scripted day of the network against a real daemon over real sockets: 3 POS (two
institutions) with their PSAMs, 2 kiosks, 50 virtual cards.

Kiosks load every card from its personal fund (one load's confirmation is lost; the card's next
load, at the other kiosk, proves it by its online counter). The POS settle a HIS bill for every
card online (bill → split → the card's ED debit through the PSAM → advice with the TAC), take
offline purchases, void one settled bill after its debit, lose the answer to one settlement
before the card is debited (the reversal is stored and sent at the next sign-on). At day end each
POS settles its batch (0500): not balanced, so every record is uploaded (0320) — the online
debits already advised too. One POS uploads a forged record (a debit that never happened, with
a wrong TAC) and then uploads its whole batch again.

Some cards pay their bill's self-pay share from their EP (a second debit with its TAC and
advice). One advice is lost: the POS sends it again before its batch settlement and the bill
completes. With its line to the centre down, a POS takes purchases offline by itself (within its
downloaded limits) and uploads them at day end. A POS with its clock days behind loses one of a
card's offline records: the card's counters show the gap, reviewed beside the late record.

Afterwards every card's ED and EP shadow equals the virtual card's balances (but for the lost
record, which the chip has and the shadow has not), the forged record is in review and unposted,
every card debit is posted exactly once, and the ledger sums to zero.

The terminals are the simulators themselves (simulators/pos.py, simulators/kiosk.py), called
directly — the commands `medswitch sim pos|kiosk` run — with one terminal serving many cards in
turn; the scripts through the CLI are tested in test_sim_terminals.py."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvloop

from ledger import events as ev
from ledger.kinds import AccountKind, account_id
from ledger.medical.service import MedicalService
from ledger.medical.sql_reference import SqlDirectory
from ledger.medical.sql_store import SqlMedicalStore, sqlite_engine
from messages.outcome import Outcome
from messages.private import CardData, Purse
from messages.terminal import BatchUploadEnd, BatchUploadRecord, DebitAdvice
from simulators import terminal_card
from simulators.kiosk import Kiosk
from simulators.pos import Pos
from simulators.terminal_link import Endpoint, Unreachable
from switch.card_io.connection import CardConnection
from tests.support.daemon import Daemon, now, running_daemon
from tests.support.kiosk import PIN, give_ep, issue_psam
from tests.support.relay import ReplyDropper, dead_port
from tests.support.scripted_day import (
    CARDS,
    FORGED_FEN,
    FORGED_SERIAL,
    KIOSKS,
    LOAD_FEN,
    OFFLINE_FEN,
    cards_on_file,
    forge_record,
    issue_cards,
    ledger_sums,
    present,
    terminal_link,
    three_psams,
)
from tests.support.settlement import his_submit, his_tokens

EP_CARDS = range(3, CARDS, 5)  # their bills have a self-pay line the card's EP pays
EP_FEN = 6_000
FALLBACK_CARDS = (4, 7, 10)  # purchases at a POS whose centre is unreachable
FALLBACK_FEN = 200
LOST_ADVICE_CARD = 5
GAP_CARD = 6  # its offline debit is lost by a POS whose clock is days behind


def medical_state(medical: MedicalService, bill_id: str) -> str:
    record = medical.get_bill(bill_id)
    assert record is not None
    return record.state.value


async def lose_one_advice(pos: Pos, work: Coroutine[Any, Any, list[str]]) -> list[str]:
    """Run ``work`` with the POS's first debit advice lost on its way to the centre."""
    exchange = pos.link.exchange

    async def losing(request: Any, **options: Any) -> Any:
        if isinstance(request, DebitAdvice):
            pos.link.exchange = exchange  # type: ignore[method-assign]
            raise Unreachable("the advice is lost on the line")
        return await exchange(request, **options)

    pos.link.exchange = losing  # type: ignore[method-assign]
    try:
        return await work
    finally:
        pos.link.exchange = exchange  # type: ignore[method-assign]


def purses(card: CardConnection) -> tuple[int, int]:
    terminal_card.open_application(card, PIN)
    return terminal_card.balance(card, Purse.ED), terminal_card.balance(card, Purse.EP)


async def upload_every_record(pos: Pos) -> list[tuple[str, str]]:
    """A test helper: the POS's whole batch as 0320 records and the end of upload, as its
    batch settlement sends them, without the 0500 and the sign-on that follow."""
    codes = []
    for record in pos.state.records:
        data = CardData.parse(bytes.fromhex(record["card"]))
        message = BatchUploadRecord(
            **pos.link.envelope(), pan=record["pan"], amount_fen=record["amount_fen"], card=data
        )
        codes.append(("record", (await pos.link.exchange(message)).response_code))
    count = f"{len(pos.state.records):04d}"
    end = await pos.link.exchange(BatchUploadEnd(**pos.link.envelope(), count=count))
    return [*codes, ("end", end.response_code)]


def test_a_scripted_day_of_three_pos_two_kiosks_and_fifty_cards(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        ledger = daemon.app.ledger
        assert ledger is not None
        db = daemon.home / "medswitch.db"
        port = daemon.app.terminal_port
        cards = cards_on_file(db, CARDS)
        psam_rows = three_psams(db)
        institutions = sorted({p.institution_id for p in psam_rows})
        tokens = await his_tokens(daemon, institutions)

        conns, keys = await issue_cards(daemon, cards)
        psams = [await issue_psam(daemon, row, keys.purchase) for row in psam_rows]
        for i in EP_CARDS:  # an EP load's outcome (the kiosk's EP load is not exercised here)
            await give_ep(daemon, conns[i]._card, cards[i].serial, EP_FEN)  # type: ignore[attr-defined]

        # Every card's HIS bill, submitted by the institution whose POS will settle it.
        def submit(i: int, number: str) -> dict[str, Any]:
            institution = psam_rows[i % 3].institution_id
            body = {
                "his_bill_no": number,
                "card_no": cards[i].card_no,
                "service_date": now().date().isoformat(),
                "lines": [{"code": "A01", "quantity": 2, "unit_price_fen": 1000}],
            }
            if i in EP_CARDS and number != "HIS-DAY-LOST":
                body["lines"].append({"code": "C01", "quantity": 1, "unit_price_fen": 5000})
            return his_submit(daemon.app.http_port, institution, tokens[institution], body)

        bills = [await asyncio.to_thread(submit, i, f"HIS-DAY-{i:03d}") for i in range(CARDS)]
        lost_bill = await asyncio.to_thread(submit, 2, "HIS-DAY-LOST")

        kiosks = []
        for n, terminal_id in enumerate(KIOSKS):
            link = await terminal_link(
                daemon, terminal_id, "centre", tmp_path / f"kiosk{n}.json", port, 5.0
            )
            kiosks.append(Kiosk(link, conns[0], pan=cards[0].card_no, pin=PIN))
        # POS 2 first works through a relay that passes sign-on, parameters and blacklist,
        # then drops every reply: its settlement's answer is lost before the card is debited.
        dropper = ReplyDropper(port, keep=3)
        relay = await dropper.start()
        poses = []
        for n, row in enumerate(psam_rows):
            link = await terminal_link(
                daemon,
                row.terminal_id,
                row.institution_id,
                tmp_path / f"pos{n}.json",
                relay if n == 2 else port,
                1.0 if n == 2 else 5.0,
            )
            poses.append(Pos(link, conns[0], psams[n], pan=cards[0].card_no, pin=PIN))
        loaded = [0] * CARDS
        try:
            for kiosk in kiosks:
                await kiosk.sign_on()
            for pos in poses:
                await pos.sign_on()
            assert poses[0].state.count_max >= 10 and poses[0].state.floor_fen >= OFFLINE_FEN

            # A settlement whose answer never comes: the card is not debited, the reversal
            # is stored; the POS restarts on the real line and its sign-on sends the reversal.
            present(poses[2], conns[2], cards[2])
            lost = await poses[2].settle(lost_bill["bill_id"], 2000)
            assert any("the reversal is stored" in line for line in lost), lost
            assert poses[2].state.pending_reversal is not None
            await poses[2].link.close()
            await dropper.stop()
            dropper.server = None
            poses[2].link.endpoint = Endpoint("127.0.0.1", port, 5.0)
            restarted = await poses[2].sign_on()
            assert any("answered 00" in line for line in restarted), restarted
            assert poses[2].state.pending_reversal is None

            # Loads: every card at one kiosk or the other.
            for i in range(CARDS):
                kiosk = kiosks[i % 2]
                present(kiosk, conns[i], cards[i])
                assert kiosk.insert()[0].endswith("PIN verified")
                lines = await kiosk.load(LOAD_FEN)
                assert lines[0].startswith("loaded"), lines
                loaded[i] += LOAD_FEN
            # Card 0's load at the first kiosk: the card is credited, the confirmation lost.
            present(kiosks[0], conns[0], cards[0])
            lines = await kiosks[0].load(2_000, lose_confirmation=True)
            assert "confirmation was lost" in lines[0], lines
            in_doubt = account_id(AccountKind.ED_LOADS_IN_DOUBT, cards[0].serial)
            assert (await ledger.balances([in_doubt]))[in_doubt].balance_fen == 2_000
            # Its next load, at the other kiosk: the card's online counter proves the first.
            present(kiosks[1], conns[0], cards[0])
            lines = await kiosks[1].load(1_000)
            assert lines[0].startswith("loaded"), lines
            assert (await ledger.balances([in_doubt]))[in_doubt].balance_fen == 0
            loaded[0] += 3_000
            balance = await kiosks[1].balance()
            assert any("card ED (shadow)" in line for line in balance), balance

            # HIS bills settled online, and offline purchases for every other card. One
            # advice is lost on its way: the POS sends it again at its batch settlement.
            for i in range(CARDS):
                pos = poses[i % 3]
                present(pos, conns[i], cards[i])
                total, how = bills[i]["split"]["total_fen"], "ep" if i in EP_CARDS else "cash"
                if i == LOST_ADVICE_CARD:
                    lines = await lose_one_advice(pos, pos.settle(bills[i]["bill_id"], total))
                    assert any("sent again at the batch settlement" in x for x in lines), lines
                    continue
                lines = await pos.settle(bills[i]["bill_id"], total, self_pay=how)
                assert any("advice 00" in line for line in lines), lines
                if i in EP_CARDS:
                    assert any("from the card's EP (TAC" in line for line in lines), lines
                if i % 2 == 0:
                    lines = await pos.offline(OFFLINE_FEN)
                    assert lines[0].startswith("offline purchase"), lines
            # A void after the debit: the bill's shares go back, the card's debit stands.
            present(poses[1], conns[1], cards[1])
            assert await poses[1].void(bills[1]["bill_id"]) == [
                f"bill {bills[1]['bill_id']} voided"
            ]

            # POS 1's line to the centre goes down: it takes purchases offline by itself.
            endpoint = poses[1].link.endpoint
            await poses[1].link.close()
            poses[1].link.endpoint = Endpoint("127.0.0.1", dead_port(), 1.0)
            for i in FALLBACK_CARDS:
                present(poses[1], conns[i], cards[i])
                lines = await poses[1].purchase(FALLBACK_FEN)
                assert "centre unreachable" in lines[0] and "offline purchase" in lines[1], lines
            poses[1].link.endpoint = endpoint
            # POS 1 with its clock 4 days behind: of the card's two offline debits it loses the
            # first (the chip has it, no upload will): a gap in the card's counters.
            present(poses[1], conns[GAP_CARD], cards[GAP_CARD])
            poses[1].link.offset -= timedelta(days=4)
            await poses[1].offline(OFFLINE_FEN)
            lost_record = poses[1].state.records.pop()
            poses[1].state.save()
            await poses[1].offline(OFFLINE_FEN)
            late = CardData.parse(bytes.fromhex(poses[1].state.records[-1]["card"]))
            poses[1].link.offset += timedelta(days=4)

            # Day end. POS 0 carries a forged record, and uploads its whole batch once before
            # its batch settlement uploads it all again.
            forge_record(poses[0])
            first = await upload_every_record(poses[0])
            assert first[-1] == ("end", "00"), first
            assert ("record", Outcome.SECURITY_FAILURE.code) in first, first
            once = await ledger_sums(daemon)
            genuine: list[dict[str, Any]] = []
            for n, pos in enumerate(poses):
                records = [dict(r) for r in pos.state.records]
                genuine += [r | {"terminal_no": psam_rows[n].terminal_no} for r in records]
                lines = await pos.settle_batch()
                assert "not balanced: uploading every record" in lines, lines
                assert "end of upload: 00" in lines, lines
                assert lines[-1].startswith("signed on: batch"), lines
                if n == 0:
                    assert await ledger_sums(daemon) == once  # the second upload: nothing
            forged = [r for r in genuine if r["amount_fen"] == FORGED_FEN]
            genuine = [r for r in genuine if r["amount_fen"] != FORGED_FEN]
            assert len(forged) == 1 and forged[0]["terminal_no"] == psam_rows[0].terminal_no
        finally:
            for terminal in [*kiosks, *poses]:
                await terminal.link.close()
            if dropper.server is not None:
                await dropper.stop()

        # Every card debit posted exactly once; the forged one not at all, and in review.
        debit_ids = {
            ev.card_debit_id(r["terminal_no"], CardData.parse(bytes.fromhex(r["card"])).psam_serial)
            for r in genuine
        }
        ep_count = len(EP_CARDS)
        offline = CARDS // 2 + len(FALLBACK_CARDS) + 1  # and the late one after the gap
        assert len(debit_ids) == len(genuine) == CARDS + ep_count + offline
        posted = await ledger.lookup_transfers(sorted(debit_ids))
        assert set(posted) == debit_ids
        forged_id = ev.card_debit_id(psam_rows[0].terminal_no, FORGED_SERIAL)
        assert forged_id not in await ledger.lookup_transfers([forged_id])
        reviews = {(item.reason, item.reference) for item in await ledger.reviews()}
        forged_subject = f"card-debit|{psam_rows[0].terminal_no}|{FORGED_SERIAL}"
        gap = cards[GAP_CARD].serial, "ED", (late.offline_counter or 0) - 2, late.offline_counter
        assert reviews == {  # nothing else: an advised debit uploaded again is no conflict
            ("bad_tac", forged_subject),
            ("late_upload", f"card-debit|{psam_rows[1].terminal_no}|{late.psam_serial}"),
            ("offline_counter_gap", "counter-gap|{}|{}|{}|{}".format(*gap)),
        }
        spent = [[0, 0] for _ in range(CARDS)]
        for i, on_file in enumerate(cards):
            for n, kind in enumerate((AccountKind.CARD_ED_SHADOW, AccountKind.CARD_EP_SHADOW)):
                history = await ledger.history(account_id(kind, on_file.serial))
                debits = [p for p in history if p.transfer.code == ev.TransferCode.CARD_DEBIT]
                purse = ("ED", "EP")[n]
                mine = [r for r in genuine if r["pan"] == on_file.card_no and r["purse"] == purse]
                assert sorted(p.transfer.amount_fen for p in debits) == sorted(
                    r["amount_fen"] for r in mine
                )
                spent[i][n] = sum(r["amount_fen"] for r in mine)

        # Each card's ED and EP shadow equals the virtual card's purses (the chip has paid the
        # lost record too: it is below its shadow by that much).
        for i, on_file in enumerate(cards):
            ed_id = account_id(AccountKind.CARD_ED_SHADOW, on_file.serial)
            ep_id = account_id(AccountKind.CARD_EP_SHADOW, on_file.serial)
            found = await ledger.balances([ed_id, ep_id])
            shadow = tuple(found[a].balance_fen if a in found else 0 for a in (ed_id, ep_id))
            ep = EP_FEN if i in EP_CARDS else 0
            expected = (loaded[i] - spent[i][0], ep - spent[i][1])
            lost = lost_record["amount_fen"] if i == GAP_CARD else 0
            chip = purses(conns[i])
            assert shadow == expected == (chip[0] + lost, chip[1]), on_file.card_no
        await ledger_sums(daemon)

        # The bill whose advice was lost completed when the advice came again; so did the rest.
        engine = sqlite_engine(db)
        medical = MedicalService(SqlMedicalStore(engine), SqlDirectory(engine))
        states = {medical_state(medical, b["bill_id"]) for i, b in enumerate(bills) if i != 1}
        assert states == {"completed"}
        assert medical_state(medical, bills[1]["bill_id"]) == "voided"

    async def main() -> None:
        async with running_daemon(tmp_path, cardholders=CARDS) as daemon:
            await scenario(daemon)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), timeout=120))

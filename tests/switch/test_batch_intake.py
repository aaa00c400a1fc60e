"""Batch-upload intake in process (no sockets): each record's TAC under the card's DTK of the
record's key version; a TAC-valid record posts whatever its anomalies — a date older than the
offline age limit, another institution's PSAM, a counter gap (once the grace of later uploads is
over) — and they go to review beside it."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from dataclasses import replace
from typing import Any, cast

from hsm import pboc
from hsm.des import Des, adjust_parity, kcv
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.mac import pboc_mac
from hsm.soft import SoftHsm
from ledger import events as ev
from ledger.core import Transfer, TransferResult, new_account
from ledger.kinds import AccountKind, account_id
from ledger.memory import MemoryLedger
from messages.outcome import Outcome
from messages.private import CardData, Purse
from routing.batch import UploadItem, intake, review_counter_gaps
from routing.cardkeys import card_master_alias
from routing.context import CardRecord, RequestContext, TerminalRecord

OURS, THEIRS = "000000000001", "000000000002"  # PSAMs of this institution and another
CARD = CardRecord("6212340000000016", "3100000000000001", "c1", 2, "active", dt.date(2035, 1, 1))
NOW = dt.datetime(2026, 11, 25, 12, 0, 0)


class Cards:
    def get(self, card_no: str) -> CardRecord | None:
        return CARD if card_no == CARD.card_no else None

    def psam_institution(self, psam_terminal_no: str) -> str | None:
        return {OURS: "inst-a", THEIRS: "inst-b"}.get(psam_terminal_no)

    def blacklist_version(self) -> int:
        return 0

    def blacklist_changes(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        return []


def record(
    master: bytes, version: int, psam: str, serial: int, counter: int, when: dt.datetime
) -> UploadItem:
    tac_key = Des(pboc.tac_key(pboc.diversify(Des(master), pboc.card_factor(CARD.serial_bytes))))
    data = pboc.purchase_tac_data(500, pboc.TYPE_ED_PURCHASE, bytes.fromhex(psam), serial, when)
    card = CardData(
        app_serial=CARD.serial_bytes,
        purse=Purse.ED,
        key_version=version,
        offline_counter=counter,
        amount_fen=500,
        pboc_type=pboc.TYPE_ED_PURCHASE,
        tac=pboc_mac(tac_key, data),
        psam_terminal=bytes.fromhex(psam),
        psam_serial=serial,
        card_datetime=when.strftime("%Y%m%d%H%M%S"),
    )
    return UploadItem(CARD.card_no, 500, card, "P0000001", "000001")


def pos_context(hsm: SoftHsm, ledger: MemoryLedger) -> RequestContext:
    """A request of POS P0000001 of institution inst-a, at NOW."""
    return RequestContext(
        TerminalRecord("P0000001", "inst-a", "pos", "active", "000001"),
        None,
        NOW,
        hsm,
        cast(Any, None),
        cast(Any, None),
        Cards(),
        ledger,
        "test",
    )


def test_anomalies_go_to_review_beside_postings_under_each_key_version() -> None:
    async def scenario() -> None:
        components = [Component(secrets.token_bytes(16)) for _ in range(2)]
        hsm = SoftHsm(Lmk(components, kcv(combine(components))), MemoryKeyStore())
        masters = [adjust_parity(secrets.token_bytes(16)) for _ in range(2)]
        alias = card_master_alias(KeyUsage.MK_TAC)
        versions = [
            (await hsm.form_key(alias, KeyUsage.MK_TAC, [Component(m)], now=NOW)).version
            for m in masters
        ]
        ledger = MemoryLedger()
        context = pos_context(hsm, ledger)
        fresh = NOW - dt.timedelta(hours=1)
        items = [
            record(masters[0], versions[0], OURS, 1, 0, fresh),  # an older card key version
            record(masters[1], versions[1], OURS, 2, 1, NOW - dt.timedelta(days=10)),  # late
            record(masters[1], versions[1], THEIRS, 3, 4, fresh),  # other PSAM; 2..3 missing
            record(masters[0], versions[1], OURS, 4, 5, fresh),  # TAC under the wrong key
        ]
        outcomes = await intake(context, items)
        assert outcomes == [Outcome.APPROVED] * 3 + [Outcome.SECURITY_FAILURE]
        assert await intake(context, items) == outcomes  # uploaded again: nothing changes
        shadow = await ledger.balance(
            account_id(AccountKind.CARD_ED_SHADOW, CARD.application_serial)
        )
        assert shadow is not None and shadow.balance_fen == -1_500  # the card has paid
        reasons = {item.reason: item.reference for item in await ledger.reviews()}
        assert reasons["late_upload"] == f"card-debit|{OURS}|2"
        assert reasons["psam_other_institution"] == f"card-debit|{THEIRS}|3"
        assert "offline_counter_gap" not in reasons  # another POS may still bring 2 and 3
        assert reasons["bad_tac"] == f"card-debit|{OURS}|4"
        assert "shadow_below_zero" in reasons
        held = await ledger.offline_records("P0000001", 1)
        assert [r.transfer_id is not None for r in held] == [True, True, True, False]

        # The gap across uploads: still open once the debit after it is older than the age
        # limit (any POS holding 2 and 3 had to upload them by then), it goes to review.
        purse = [(CARD.application_serial, "ED")]
        assert await review_counter_gaps(context, purse) == 0
        later = replace(context, now=NOW + dt.timedelta(hours=context.offline.age_max_h + 2))
        assert await review_counter_gaps(later, purse) == 1
        gaps = [i for i in await ledger.reviews() if i.reason == "offline_counter_gap"]
        assert [i.reference for i in gaps] == [f"counter-gap|{CARD.application_serial}|ED|1|4"]

    asyncio.run(scenario())


def test_a_shadow_is_reviewed_at_the_debit_that_takes_it_below_zero() -> None:
    """The shadow's balance before the window (read in the post's own round), less the
    window's new debits in order: the review names the debit that crossed zero, once."""

    async def scenario() -> None:
        components = [Component(secrets.token_bytes(16)) for _ in range(2)]
        hsm = SoftHsm(Lmk(components, kcv(combine(components))), MemoryKeyStore())
        master = adjust_parity(secrets.token_bytes(16))
        alias = card_master_alias(KeyUsage.MK_TAC)
        formed = await hsm.form_key(alias, KeyUsage.MK_TAC, [Component(master)], now=NOW)
        version = formed.version
        ledger = MemoryLedger()
        clearing = account_id(AccountKind.ED_PROOF_CLEARING, ev.CENTRE)
        shadow = account_id(AccountKind.CARD_ED_SHADOW, CARD.application_serial)
        card_accounts = ev.card_accounts(CARD.application_serial)
        centre = new_account(AccountKind.ED_PROOF_CLEARING, ev.CENTRE)
        await ledger.open_accounts([centre, *card_accounts])
        load = Transfer("load", clearing, shadow, 1_200, ev.TransferCode.LOAD_TO_SHADOW)
        assert await ledger.post([load]) == [TransferResult.CREATED]
        context = pos_context(hsm, ledger)
        fresh = NOW - dt.timedelta(hours=1)
        items = [record(master, version, OURS, n, n, fresh) for n in (1, 2, 3, 4)]
        assert await intake(context, items[:2]) == [Outcome.APPROVED] * 2
        assert not [i for i in await ledger.reviews() if i.reason == "shadow_below_zero"]
        assert await intake(context, items) == [Outcome.APPROVED] * 4  # 1 and 2 again
        below = [i for i in await ledger.reviews() if i.reason == "shadow_below_zero"]
        assert [(i.reference, i.amount_fen) for i in below] == [
            (f"card-debit|{OURS}|3", -300),
            (f"card-debit|{OURS}|4", -800),
        ]
        assert (await ledger.balance(shadow)).balance_fen == -800  # type: ignore[union-attr]

    asyncio.run(scenario())

"""The business events of DESIGN §5 on the model, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ledger import events as ev
from ledger.core import Ledger
from ledger.events import Outcome as O
from ledger.events import Purse
from tests.support.events import (
    CARD,
    HOLDER,
    PERSONAL_FEN,
    POOLED_FEN,
    backend,
    balance_fen,
    check_balances,
    deploy,
)

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PF, ED, EP = f"pf:{HOLDER}", f"ed:{CARD}", f"ep:{CARD}"
Case = Callable[[Ledger], Awaitable[None]]


def run(name: str, tmp_path: Path, case: Case) -> None:
    async def go() -> None:
        async with backend(name, tmp_path) as ledger:
            await deploy(ledger)
            await case(ledger)
            await check_balances(ledger)

    asyncio.run(go())


def ed_load(key: str, counter: int, amount: int, random: str = "r1") -> ev.Attempt:
    return ev.load(key, random, CARD, Purse.ED, counter, amount, HOLDER)


def ep_load(key: str, counter: int, amount: int, random: str = "r1") -> ev.Attempt:
    return ev.load(key, random, CARD, Purse.EP, counter, amount, "b1")


async def reasons(ledger: Ledger) -> list[str]:
    return [item.reason for item in await ledger.reviews()]


@pytest.mark.parametrize("name", BACKENDS)
def test_contributions_and_statement(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        line = ev.ContributionLine("u1", "2026-11", HOLDER, PERSONAL_FEN, POOLED_FEN)
        assert (await ev.post_contribution(ledger, line)).outcome is O.ALREADY_POSTED
        assert await balance_fen(ledger, PF) == PERSONAL_FEN
        assert await balance_fen(ledger, "pool:centre") == POOLED_FEN
        statement = ev.StatementLine("st1", 1, "u1", PERSONAL_FEN + POOLED_FEN)
        assert (await ev.post_contribution_received(ledger, statement)).outcome is O.POSTED
        assert (await ev.post_contribution_received(ledger, statement)).outcome is O.ALREADY_POSTED
        assert await balance_fen(ledger, "contrib:u1") == 0
        assert await balance_fen(ledger, "fundbank:centre") == PERSONAL_FEN + POOLED_FEN

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_ed_load_confirmed_once(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        attempt = ed_load("T1|1|000001|0200", 5, 30_000)
        assert (await ev.post_into_doubt(ledger, attempt)).outcome is O.POSTED
        assert (await ev.post_into_doubt(ledger, attempt)).outcome is O.ALREADY_POSTED
        assert await balance_fen(ledger, PF) == PERSONAL_FEN - 30_000
        assert (await ev.resolve_attempt(ledger, attempt, happened=True)).outcome is O.POSTED
        again = await ev.resolve_attempt(ledger, attempt, happened=True)
        assert again.outcome is O.ALREADY_POSTED
        assert await balance_fen(ledger, ED) == 30_000
        replayed = await ev.post_into_doubt(ledger, attempt)  # a late retransmission
        assert replayed.outcome is O.ALREADY_POSTED
        otherwise = await ev.resolve_attempt(ledger, attempt, happened=False)
        assert otherwise.outcome is O.CONFLICT and otherwise.review is not None
        assert await balance_fen(ledger, ED) == 30_000
        assert await ev.open_attempts(ledger, CARD, Purse.ED) == []
        assert await ev.find_attempt(ledger, attempt.message_key, "r1") == attempt
        assert await ev.find_attempt(ledger, attempt.message_key, "other") is None

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_ed_load_declined_without_funds(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        attempt = ed_load("T1|1|000002|0200", 5, PERSONAL_FEN + 1)
        assert (await ev.post_into_doubt(ledger, attempt)).outcome is O.INSUFFICIENT_FUNDS
        assert await balance_fen(ledger, PF) == PERSONAL_FEN
        assert await reasons(ledger) == []

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_ep_load_not_happened_goes_back_with_a_reversal(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        attempt = ep_load("B1|0101120000|000009|0200", 3, 5_000)
        assert (await ev.post_into_doubt(ledger, attempt)).outcome is O.POSTED
        assert await balance_fen(ledger, "clearing:b1") == 5_000  # the bank owes it
        assert (await ev.resolve_attempt(ledger, attempt, happened=False)).outcome is O.POSTED
        await ev.resolve_attempt(ledger, attempt, happened=False)
        assert await balance_fen(ledger, "clearing:b1") == 0
        reversals = await ledger.queued_reversals()
        assert [(r.bank_id, r.amount_fen) for r in reversals] == [("b1", 5_000)]
        assert await balance_fen(ledger, EP) == 0

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_counter_proves_torn_loads(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        torn = ed_load("T1|1|000010|0200", 7, 1_000, random="aa")
        retry = ed_load("T1|1|000011|0200", 7, 1_000, random="bb")  # same counter: A was torn
        single = ed_load("T1|1|000012|0200", 8, 2_000, random="cc")
        for attempt in (torn, retry):
            await ev.post_into_doubt(ledger, attempt)
        assert (await ev.resolve_attempt(ledger, retry, happened=True)).outcome is O.POSTED
        # a second attempt can never take the same proof key to the shadow
        assert (await ev.resolve_attempt(ledger, torn, happened=True)).outcome is O.CONFLICT
        await ev.post_into_doubt(ledger, single)
        # the card now says counter 9: torn did not happen (its proof was taken), single did
        check = await ev.check_chip_balance(ledger, CARD, Purse.ED, 3_000, online_counter=9)
        assert check.status is ev.ChipStatus.EQUAL, check
        assert await balance_fen(ledger, ED) == 3_000
        assert await balance_fen(ledger, PF) == PERSONAL_FEN - 3_000
        assert await ev.open_attempts(ledger, CARD, Purse.ED) == []

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_counter_unchanged_means_not_happened(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        attempt = ed_load("T1|1|000020|0200", 4, 1_000)
        await ev.post_into_doubt(ledger, attempt)
        # a retransmission (same random) or a caller that does not say: still under way
        for random in ("r1", None):
            check = await ev.check_chip_balance(ledger, CARD, Purse.ED, 0, 4, card_random=random)
            assert check.proofs == ()
        assert await balance_fen(ledger, PF) == PERSONAL_FEN - 1_000
        # a new INITIALIZE (another random) still showing counter 4: it did not happen
        check = await ev.check_chip_balance(ledger, CARD, Purse.ED, 0, 4, card_random="r2")
        assert check.status is ev.ChipStatus.EQUAL
        assert [p.outcome for p in check.proofs] == [O.POSTED]
        assert await balance_fen(ledger, PF) == PERSONAL_FEN
        # the undone attempt retransmitted late: no second MAC2 for it
        late = await ev.post_into_doubt(ledger, attempt)
        assert late.outcome is O.CONFLICT and late.review is not None

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_chip_above_shadow_goes_to_review_below_is_normal(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        below = await ev.check_chip_balance(ledger, CARD, Purse.EP, -10, online_counter=1)
        assert below.status is ev.ChipStatus.CHIP_BELOW_SHADOW and below.review is None
        above = await ev.check_chip_balance(ledger, CARD, Purse.EP, 250, online_counter=1)
        assert above.status is ev.ChipStatus.CHIP_ABOVE_SHADOW
        assert await reasons(ledger) == ["chip_above_shadow"]

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_unload_proven_and_not(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        loaded = ed_load("T1|1|000030|0200", 1, 5_000)
        await ev.post_into_doubt(ledger, loaded)
        await ev.resolve_attempt(ledger, loaded, happened=True)
        first = ev.unload("T1|1|000031|0200", "u1", CARD, 2, 2_000, HOLDER)
        assert (await ev.post_into_doubt(ledger, first)).outcome is O.POSTED
        assert (await ev.resolve_attempt(ledger, first, happened=True)).outcome is O.POSTED
        second = ev.unload("T1|1|000032|0200", "u2", CARD, 3, 1_000, HOLDER)
        await ev.post_into_doubt(ledger, second)
        assert (await ev.resolve_attempt(ledger, second, happened=False)).outcome is O.POSTED
        assert await balance_fen(ledger, ED) == 3_000
        assert await balance_fen(ledger, PF) == PERSONAL_FEN - 3_000

    run(name, tmp_path, case)


def debit(serial: int, amount: int, purse: Purse = Purse.ED, **kw: str | None) -> ev.CardDebit:
    fields: dict[str, str | None] = {"institution_id": "h1", "terminal_institution_id": "h1"}
    fields.update(kw)
    return ev.CardDebit("000000000001", serial, CARD, purse, amount, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BACKENDS)
def test_card_debit_posts_once_and_anomalies_go_to_review(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        advice = debit(1, 700, bill_id="B1")
        assert (await ev.post_card_debit(ledger, advice)).outcome is O.POSTED
        assert (await ev.post_card_debit(ledger, advice)).outcome is O.ALREADY_POSTED  # upload
        assert await balance_fen(ledger, ED) == -700  # the card is the authority
        assert await balance_fen(ledger, "payins:h1") == 700
        clash = await ev.post_card_debit(ledger, debit(1, 701, bill_id="B1"))
        assert clash.outcome is O.CONFLICT
        other = debit(2, 300, Purse.EP, institution_id="h2", bill_id=None)  # offline, no bill
        assert (await ev.post_card_debit(ledger, other)).outcome is O.POSTED
        assert await balance_fen(ledger, "payep:h2") == 300
        assert sorted(await reasons(ledger)) == [
            "id_conflict",
            "psam_other_institution",
            "shadow_below_zero",
            "shadow_below_zero",
        ]

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_bill_completion_once_and_void_refunds(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        bill = ev.BillCompletion("B7", "h1", 8_000)
        assert (await ev.post_bill_completion(ledger, bill)).outcome is O.POSTED
        assert (await ev.post_bill_completion(ledger, bill)).outcome is O.ALREADY_POSTED
        zero = ev.BillCompletion("B8", "h1", 0)
        assert (await ev.post_bill_completion(ledger, zero)).outcome is O.NOTHING_TO_POST
        await ev.post_card_debit(ledger, debit(5, 1_000, bill_id="B7"))
        await ev.post_card_debit(ledger, debit(6, 500, Purse.EP, bill_id="B7"))
        void = ev.Void("B7", "h1", HOLDER, 8_000, 1_000, 500)
        assert (await ev.post_void(ledger, void)).outcome is O.POSTED
        assert (await ev.post_void(ledger, void)).outcome is O.ALREADY_POSTED
        assert await balance_fen(ledger, "payins:h1") == 0
        assert await balance_fen(ledger, "payep:h1") == 0
        assert await balance_fen(ledger, "pool:centre") == POOLED_FEN
        assert await balance_fen(ledger, PF) == PERSONAL_FEN + 1_000
        assert await balance_fen(ledger, f"refund:{HOLDER}") == 500

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_card_sweep_after_the_grace_period(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        for attempt in (ed_load("T|1", 1, 4_000), ep_load("T|2", 1, 600)):
            await ev.post_into_doubt(ledger, attempt)
            await ev.resolve_attempt(ledger, attempt, happened=True)
        cancelled = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        sweep = ev.CardSweep(CARD, HOLDER, cancelled)
        early = cancelled + dt.timedelta(days=29)
        assert (await ev.post_card_sweep(ledger, sweep, early)).outcome is O.TOO_EARLY
        late = cancelled + ev.GRACE_PERIOD
        assert (await ev.post_card_sweep(ledger, sweep, late)).outcome is O.POSTED
        assert await balance_fen(ledger, ED) == 0
        assert await balance_fen(ledger, PF) == PERSONAL_FEN
        assert await balance_fen(ledger, f"refund:{HOLDER}") == 600
        assert (await ev.post_card_sweep(ledger, sweep, late)).outcome is O.NOTHING_TO_POST

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_payouts_in_flight_paid_or_returned(name: str, tmp_path: Path) -> None:
    async def case(ledger: Ledger) -> None:
        await ev.post_card_debit(ledger, debit(9, 2_000))
        await ev.post_card_debit(ledger, debit(10, 300, Purse.EP))
        same = ev.PayoutOrder("P0", "payins:h1", 2_000, "alice", "alice")
        assert (await ev.post_payout(ledger, same)).outcome is O.REFUSED
        insurance = ev.PayoutOrder("P1", "payins:h1", 2_000, "alice", "bob")
        purse = ev.PayoutOrder("P2", "payep:h1", 300, "alice", "bob")
        for order in (insurance, purse):
            assert (await ev.post_payout(ledger, order)).outcome is O.POSTED
        assert (await ev.resolve_payout(ledger, "P1", paid=True)).outcome is O.POSTED
        assert (await ev.resolve_payout(ledger, "P1", paid=False)).outcome is O.CONFLICT
        assert (await ev.resolve_payout(ledger, "P2", paid=False)).outcome is O.POSTED
        assert await balance_fen(ledger, "payins:h1") == 0
        assert await balance_fen(ledger, "fundbank:centre") == -2_000
        assert await balance_fen(ledger, "payep:h1") == 300  # returned: to be re-issued
        missing = await ev.resolve_payout(ledger, "P9", paid=True)
        assert missing.outcome is O.REFUSED
        savings = ev.StatementLine("s1", 1, "b1", 300)
        assert (await ev.post_savings_debits_settled(ledger, savings)).outcome is O.POSTED

    run(name, tmp_path, case)


@pytest.mark.parametrize("name", BACKENDS)
def test_accounts_of_new_cards_cardholders_and_institutions_open_on_first_use(
    name: str, tmp_path: Path
) -> None:
    async def case(ledger: Ledger) -> None:
        line = ev.ContributionLine("u9", "2026-11", "c9", 5_000, 1_000)  # nobody opened these
        assert (await ev.post_contribution(ledger, line)).outcome is O.POSTED
        attempt = ev.load("T|9", "r9", "k9", Purse.ED, 0, 2_000, "c9")
        assert (await ev.post_into_doubt(ledger, attempt)).outcome is O.POSTED
        assert (await ev.resolve_attempt(ledger, attempt, happened=True)).outcome is O.POSTED
        debit = ev.CardDebit("000000000009", 1, "k9", Purse.ED, 500, "h9", "h9")
        assert (await ev.post_card_debit(ledger, debit)).outcome is O.POSTED
        assert await balance_fen(ledger, "ed:k9") == 1_500
        assert await balance_fen(ledger, "payins:h9") == 500
        assert await reasons(ledger) == []
        # the centre's own accounts are deployment, never opened behind anyone's back
        await ledger.close_accounts(["pool:centre"])
        refused = await ev.post_bill_completion(ledger, ev.BillCompletion("B9", "h9", 100))
        assert refused.outcome is O.REFUSED and refused.review is not None

    run(name, tmp_path, case)

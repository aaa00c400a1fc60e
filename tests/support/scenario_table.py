"""One TigerBeetle-style scenario table: (operation, inputs, expected) rows run in order against
every ledger implementation (the in-memory model, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.core import (
    AccountFlags,
    AccountResult,
    CloseResult,
    Ledger,
    Transfer,
    new_account,
)
from ledger.core import AccountResult as A
from ledger.core import TransferResult as R
from ledger.kinds import AccountKind as K

PF = "pf:c1"  # personal fund, never negative
PF2 = "pf:c2"
POOL = "pool:city"
RECV = "contrib:u1"
BANK = "fundbank:city"
ED = "ed:card1"  # card ED shadow: may go below zero
EP = "ep:card1"
PAYINS = "payins:h1"
EDLOAD = "edload:card1"


def t(id_: str, debit: str, credit: str, amount_fen: int, code: int = 1, ref: str = "") -> Transfer:
    return Transfer(id_, debit, credit, amount_fen, code, ref)


@dataclass(frozen=True)
class Step:
    op: str  # open | post | link | close | balance
    inputs: object
    expected: object


SCENARIO: list[Step] = [
    Step(
        "open",
        [
            new_account(K.PERSONAL_FUND, "c1"),
            new_account(K.PERSONAL_FUND, "c2"),
            new_account(K.POOLED_FUND, "city"),
            new_account(K.CONTRIBUTIONS_RECEIVABLE, "u1"),
            new_account(K.FUND_BANK, "city"),
            new_account(K.CARD_ED_SHADOW, "card1"),
            new_account(K.CARD_EP_SHADOW, "card1"),
            new_account(K.INSTITUTION_PAYABLE_INSURANCE, "h1"),
            new_account(K.ED_LOADS_IN_DOUBT, "card1"),
        ],
        [A.CREATED] * 9,
    ),
    Step(
        "open",
        [
            new_account(K.PERSONAL_FUND, "c1"),  # the same again
            new_account(K.PERSONAL_FUND, "c1", AccountFlags.NONE),  # same id, other flags
            new_account(K.CARD_ED_SHADOW, "card2", AccountFlags.NEVER_NEGATIVE),  # never on shadows
        ],
        [A.EXISTS, A.EXISTS_WITH_DIFFERENT_DATA, A.FLAGS_NOT_ALLOWED],
    ),
    Step("post", [t("c-1", RECV, PF, 10_000), t("c-2", RECV, POOL, 30_000)], [R.CREATED] * 2),
    Step("balance", PF, (0, 10_000, 10_000)),
    Step("balance", RECV, (40_000, 0, 40_000)),
    # replays: the same data changes nothing, other data is refused
    Step("post", [t("c-1", RECV, PF, 10_000)], [R.EXISTS]),
    Step("post", [t("c-1", RECV, PF, 10_001)], [R.EXISTS_WITH_DIFFERENT_DATA]),
    Step("post", [t("c-1", RECV, PF, 10_000, ref="other")], [R.EXISTS_WITH_DIFFERENT_DATA]),
    Step("balance", PF, (0, 10_000, 10_000)),
    # malformed transfers, in precedence order
    Step("post", [t("", RECV, PF, 1)], [R.ID_INVALID]),
    Step("post", [t("x" * 65, RECV, PF, 1)], [R.ID_INVALID]),
    Step("post", [t("m-1", RECV, PF, 0)], [R.AMOUNT_OUT_OF_RANGE]),
    Step("post", [t("m-1", RECV, PF, -5)], [R.AMOUNT_OUT_OF_RANGE]),
    Step("post", [t("m-1", PF, PF, 5)], [R.ACCOUNTS_MUST_BE_DIFFERENT]),
    Step("post", [t("m-1", RECV, PF, 5, ref="r" * 241)], [R.REFERENCE_TOO_LONG]),
    Step("post", [t("c-1", PF, PF, 0)], [R.AMOUNT_OUT_OF_RANGE]),  # malformed beats exists
    # accounts
    Step("post", [t("n-1", "pf:nobody", EDLOAD, 5)], [R.DEBIT_ACCOUNT_NOT_FOUND]),
    Step("post", [t("n-2", PF, "edload:nobody", 5)], [R.CREDIT_ACCOUNT_NOT_FOUND]),
    Step("post", [t("n-3", "pf:nobody", "edload:nobody", 5)], [R.DEBIT_ACCOUNT_NOT_FOUND]),
    # insurance money never reaches the purse, nor goes anywhere the table does not say
    Step("post", [t("k-1", PF, EP, 5)], [R.KINDS_NOT_ALLOWED]),
    Step("post", [t("k-2", PF, PF2, 5)], [R.KINDS_NOT_ALLOWED]),
    # never negative on the personal fund: exactly to zero is fine, one fen more is not
    Step("post", [t("l-1", PF, EDLOAD, 10_001)], [R.INSUFFICIENT_FUNDS]),
    Step("post", [t("l-2", PF, EDLOAD, 10_000)], [R.CREATED]),
    Step("balance", PF, (10_000, 10_000, 0)),
    # a remembered refusal: the replay is refused again even after the money came in
    Step("post", [t("c-3", RECV, PF, 50_000)], [R.CREATED]),
    Step("post", [t("l-1", PF, EDLOAD, 10_001)], [R.INSUFFICIENT_FUNDS]),
    Step("post", [t("n-1", "pf:nobody", EDLOAD, 5)], [R.DEBIT_ACCOUNT_NOT_FOUND]),
    Step("balance", PF, (10_000, 60_000, 50_000)),
    # the card is the authority: a card shadow may go below zero
    Step("post", [t("d-1", ED, PAYINS, 700)], [R.CREATED]),
    Step("balance", ED, (700, 0, -700)),
    # a batch: each transfer on its own, in order, seeing the ones before it
    Step(
        "post",
        [t("b-1", PF, EDLOAD, 30_000), t("b-2", PF, EDLOAD, 30_000), t("b-3", PF, EDLOAD, 20_000)],
        [R.CREATED, R.INSUFFICIENT_FUNDS, R.CREATED],
    ),
    Step("balance", PF, (60_000, 60_000, 0)),
    # linked: all or nothing, the failing one says why, a failed chain leaves no trace
    Step(
        "link",
        [t("j-1", RECV, PF, 100), t("j-2", PF, EDLOAD, 101)],
        [R.LINKED_EVENT_FAILED, R.INSUFFICIENT_FUNDS],
    ),
    Step("balance", PF, (60_000, 60_000, 0)),
    Step("link", [t("j-1", RECV, PF, 100), t("j-2", PF, EDLOAD, 100)], [R.CREATED, R.CREATED]),
    Step("link", [t("j-1", RECV, PF, 100), t("j-2", PF, EDLOAD, 100)], [R.EXISTS, R.EXISTS]),
    Step(
        "link",
        [t("j-3", RECV, PF, 1), t("j-1", RECV, PF, 2), t("j-4", RECV, PF, 1)],
        [R.LINKED_EVENT_FAILED, R.EXISTS_WITH_DIFFERENT_DATA, R.LINKED_EVENT_FAILED],
    ),
    Step("post", [t("j-3", RECV, PF, 1)], [R.CREATED]),  # j-3 was not remembered
    # closed accounts
    Step(
        "close",
        [PAYINS, PAYINS, "payins:nobody"],
        [CloseResult.CLOSED, CloseResult.ALREADY_CLOSED, CloseResult.NOT_FOUND],
    ),
    Step("post", [t("x-1", ED, PAYINS, 5)], [R.CREDIT_ACCOUNT_CLOSED]),
    Step("post", [t("d-1", ED, PAYINS, 700)], [R.EXISTS]),  # replay wins over closed
    Step("balance", PAYINS, (0, 700, 700)),
    Step("balance", "pf:nobody", None),
]


async def run_scenario(ledger: Ledger, steps: Sequence[Step] = SCENARIO) -> None:
    """Run every step, failing with the step's index and content on the first mismatch."""
    for index, step in enumerate(steps):
        got = await _run_step(ledger, step)
        assert got == step.expected, f"step {index}: {step.op} {step.inputs!r}: got {got!r}"


async def _run_step(ledger: Ledger, step: Step) -> object:
    if step.op == "open":
        results: list[AccountResult] = await ledger.open_accounts(step.inputs)  # type: ignore[arg-type]
        return results
    if step.op in ("post", "link"):
        return await ledger.post(step.inputs, linked=step.op == "link")  # type: ignore[arg-type]
    if step.op == "close":
        return await ledger.close_accounts(step.inputs)  # type: ignore[arg-type]
    if step.op == "balance":
        balance = await ledger.balance(str(step.inputs))
        if balance is None:
            return None
        return (balance.debits_posted_fen, balance.credits_posted_fen, balance.balance_fen)
    raise AssertionError(f"unknown op {step.op}")

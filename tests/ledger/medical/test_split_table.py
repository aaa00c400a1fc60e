"""The split against a table of cases, to the fen (policy: ledger.medical.policy.EXAMPLE).

Example policy, employed / retired: deductible by level 30000/50000/80000 and 20000/35000/60000
fen; pooled share 甲 9000/8500/8000 and 9500/9200/9000 bp, 乙 8500/8000/7500 and 9000/8700/8500
bp; annual pooled cap 5 000 000 fen; special category "chronic" 8000 bp at every level.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ledger.medical.accumulators import ZERO, AccumulatorBook, Totals
from ledger.medical.policy import Category, Counted
from ledger.medical.split import (
    Bill,
    BillLine,
    LineSplit,
    Part,
    Person,
    Reason,
    Share,
    Split,
    explain,
    explained_bytes_at_least,
    split_bill,
)
from tests.support.medical import CATALOGUE, POLICY, policy

EMP, RET = Category.EMPLOYED, Category.RETIRED
DONE = Totals(deductible_fen=80_000)  # the deductible already consumed at any level


@dataclass(frozen=True)
class Case:
    name: str
    lines: tuple[tuple[str, int, int], ...]  # code, quantity, unit price fen
    category: Category
    level: int
    before: Totals
    shares: tuple[int, int, int]  # personal account, pooled, self-pay
    deductible_used_fen: int
    special: str | None = None
    authorised: frozenset[str] = frozenset()


CASES = [
    Case("below the deductible", (("A01", 20, 1000),), EMP, 1, ZERO, (20000, 0, 0), 20000),
    Case(
        "deductible crossed inside one bill: line 2 straddles it",
        (("A01", 20, 1000), ("A01", 15, 1000)),
        EMP,
        1,
        ZERO,
        (30000, 4500, 500),
        30000,
    ),
    Case(
        "deductible crossed by earlier bills: 12000 left",
        (("A01", 20, 1000),),
        EMP,
        1,
        Totals(deductible_fen=18000),
        (12000, 7200, 800),
        12000,
    ),
    Case("level 3 deductible", (("A01", 90, 1000),), EMP, 3, ZERO, (80000, 8000, 2000), 80000),
    Case("retiree rates, level 2", (("A01", 50, 1000),), RET, 2, ZERO, (35000, 13800, 1200), 35000),
    Case(
        "annual cap reached: 1000 fen of pooled room left",
        (("A01", 10, 1000),),
        EMP,
        1,
        Totals(deductible_fen=30000, pooled_fen=4_999_000),
        (0, 1000, 9000),
        0,
    ),
    Case(
        "annual cap already spent",
        (("A01", 10, 1000),),
        EMP,
        1,
        Totals(deductible_fen=30000, pooled_fen=5_000_000),
        (0, 0, 10000),
        0,
    ),
    Case("class 乙 self-pay ratio 10%", (("B01", 3, 2000),), EMP, 1, DONE, (0, 4590, 1410), 0),
    Case(
        "class 乙 rounding: 199.9 → 200 self-pay, 1529.15 → 1529 pooled",
        (("B01", 1, 1999),),
        EMP,
        1,
        DONE,
        (0, 1529, 470),
        0,
    ),
    Case(
        "class 丙 is self-pay",
        (("C01", 2, 3000), ("A01", 1, 1000)),
        EMP,
        1,
        DONE,
        (0, 900, 6100),
        0,
    ),
    Case(
        "class 丙 does not fill the deductible", (("C01", 1, 5000),), EMP, 1, ZERO, (0, 0, 5000), 0
    ),
    Case(
        "special category, authorised: no deductible, 80% pooled",
        (("A01", 10, 1000),),
        EMP,
        1,
        ZERO,
        (2000, 8000, 0),
        0,
        "chronic",
        frozenset({"chronic"}),
    ),
    Case(
        "special category, not authorised: ordinary rules",
        (("A01", 10, 1000),),
        EMP,
        1,
        ZERO,
        (10000, 0, 0),
        10000,
        "chronic",
    ),
    Case(
        "price above the ceiling: the excess is self-pay",
        (("A01", 4, 1200),),
        EMP,
        1,
        ZERO,
        (4000, 0, 800),
        4000,
    ),
    Case(
        "above the ceiling, class 乙, above the deductible",
        (("B02", 1, 18000),),
        EMP,
        2,
        DONE,
        (0, 9600, 8400),
        0,
    ),
    Case("retiree, class 乙, level 3", (("B01", 5, 2000),), RET, 3, DONE, (0, 7650, 2350), 0),
    Case("half up: 90% of 5 fen is 4.5 → 5", (("A01", 1, 5),), EMP, 1, DONE, (0, 5, 0), 0),
    Case(
        "special category meets the annual cap: 500 fen of pooled room left",
        (("A01", 1, 1000),),
        EMP, 1, Totals(pooled_fen=4_999_500), (200, 500, 300), 0, "chronic",
        frozenset({"chronic"}),
    ),
    Case("unknown item is self-pay", (("Z99", 1, 777),), EMP, 1, ZERO, (0, 0, 777), 0),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_split_table(case: Case) -> None:
    bill = Bill(tuple(BillLine(*line) for line in case.lines), case.special)
    person = Person(case.category, case.authorised)
    split = split_bill(bill, CATALOGUE, POLICY, person, case.level, case.before)
    shares = (split.personal_account_fen, split.pooled_fen, split.self_pay_fen)
    assert shares == case.shares
    assert sum(shares) == split.total_fen == bill.total_fen
    assert split.delta.deductible_fen == case.deductible_used_fen
    assert (split.delta.personal_account_fen, split.delta.pooled_fen, split.delta.self_pay_fen) == (
        shares
    )
    assert explain(split)[-1].startswith("total ")


def test_reasons_are_explained_line_by_line() -> None:
    bill = Bill((BillLine("A01", 4, 1200), BillLine("C01", 1, 100), BillLine("Z99", 1, 1)))
    split = split_bill(bill, CATALOGUE, POLICY, Person(EMP), 1, ZERO)
    reasons = [[part.reason for part in line.parts] for line in split.lines]
    assert reasons == [
        [Reason.ABOVE_CEILING, Reason.DEDUCTIBLE],
        [Reason.CLASS_C],
        [Reason.UNKNOWN_ITEM],
    ]
    text = "\n".join(explain(split))
    assert "超限价自付" in text and "丙类自费" in text and "目录外项目" in text


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_receipt_is_at_least_its_lower_bound(case: Case) -> None:
    """A settlement's answer prints the short form when the bound passes its 255 bytes, without
    building the receipt: the bound is never above the receipt's size, by one to many lines."""
    for lines in (case.lines, case.lines * 3, (*case.lines, ("Z99", 1, 0), ("B02", 9, 99_999))):
        bill = Bill(tuple(BillLine(*line) for line in lines), case.special)
        split = split_bill(bill, CATALOGUE, POLICY, Person(case.category, case.authorised),
                           case.level, case.before)  # fmt: skip
        size = len("\n".join(explain(split)).encode())
        assert 0.75 * size <= explained_bytes_at_least(split) <= size, (split, size)


def test_the_lower_bound_is_reached_by_a_receipt_of_the_fewest_characters() -> None:
    """Every number at its fewest characters, no code or name: the bound is the size but for
    the category's name (which it leaves out), so no constant of it is too large."""
    parts = (
        Part(Share.POOLED, 0, Reason.POOLED),
        Part(Share.PERSONAL_ACCOUNT, 0, Reason.DEDUCTIBLE),
    )
    line = LineSplit(1, "", "", None, 1, 0, None, 0, parts)
    split = Split(1, 1, 1, 1, EMP, None, 0, 0, 0, 0, (line, line), ZERO, ("", "x"))
    size = len("\n".join(explain(split)).encode())
    assert explained_bytes_at_least(split) == size - len(EMP.value.encode())


def test_class_b_self_pay_may_count_towards_the_deductible() -> None:
    counting = policy(counted=frozenset({Counted.CLASS_B_SELF_PAY}))
    bill = Bill((BillLine("B01", 10, 2000),))  # 20000: 2000 self-pay ratio, 18000 eligible
    plain = split_bill(bill, CATALOGUE, POLICY, Person(EMP), 1, ZERO)
    counted = split_bill(bill, CATALOGUE, counting, Person(EMP), 1, ZERO)
    assert plain.delta.deductible_fen == 18000
    assert counted.delta.deductible_fen == 20000
    assert (plain.personal_account_fen, plain.pooled_fen, plain.self_pay_fen) == (18000, 0, 2000)
    assert (counted.personal_account_fen, counted.self_pay_fen) == (18000, 2000)


def test_a_void_rolls_the_accumulators_back() -> None:
    book = AccumulatorBook()
    first = Bill((BillLine("A01", 40, 1000),))  # crosses the 30000 deductible
    second = Bill((BillLine("A01", 10, 1000),))
    person = Person(EMP)

    one = split_bill(first, CATALOGUE, POLICY, person, 1, book.view("P", 2026))
    assert (one.personal_account_fen, one.pooled_fen, one.self_pay_fen) == (30000, 9000, 1000)
    book.reserve("B1", "P", 2026, one.delta)
    book.commit("B1")
    two = split_bill(second, CATALOGUE, POLICY, person, 1, book.view("P", 2026))
    assert (two.personal_account_fen, two.pooled_fen, two.self_pay_fen) == (0, 9000, 1000)

    assert book.void("B1")
    assert book.committed("P", 2026) == ZERO
    again = split_bill(second, CATALOGUE, POLICY, person, 1, book.view("P", 2026))
    assert (again.personal_account_fen, again.pooled_fen, again.self_pay_fen) == (10000, 0, 0)


def test_two_bills_in_flight_cannot_share_the_deductible() -> None:
    book = AccumulatorBook()
    bill = Bill((BillLine("A01", 30, 1000),))
    first = split_bill(bill, CATALOGUE, POLICY, Person(EMP), 1, book.view("P", 2026))
    book.reserve("B1", "P", 2026, first.delta)
    second = split_bill(bill, CATALOGUE, POLICY, Person(EMP), 1, book.view("P", 2026))
    assert first.personal_account_fen == 30000
    assert (second.personal_account_fen, second.pooled_fen) == (0, 27000)
    book.release("B1")
    assert book.view("P", 2026) == ZERO


def test_shares_by_part() -> None:
    split = split_bill(Bill((BillLine("A01", 35, 1000),)), CATALOGUE, POLICY, Person(EMP), 1, ZERO)
    (line,) = split.lines
    assert line.share_fen(Share.PERSONAL_ACCOUNT) == 30000
    assert line.share_fen(Share.POOLED) + line.share_fen(Share.SELF_PAY) == 5000

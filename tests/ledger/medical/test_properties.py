"""Properties of the split and the accumulators (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.medical.accumulators import ZERO, AccumulatorBook, EntryState, Totals
from ledger.medical.policy import Category
from ledger.medical.split import Bill, Person, offline_delta, split_bill
from tests.support.medical import CATALOGUE, POLICY, bills

people = st.builds(
    Person,
    st.sampled_from(list(Category)),
    st.sampled_from([frozenset(), frozenset({"chronic"})]),
)
before = st.builds(
    Totals,
    deductible_fen=st.integers(0, 100_000),
    pooled_fen=st.integers(0, 5_100_000),
)


@given(bills, people, st.sampled_from([1, 2, 3]), before)
def test_shares_sum_to_the_bill(bill: Bill, person: Person, level: int, acc: Totals) -> None:
    split = split_bill(bill, CATALOGUE, POLICY, person, level, acc)
    assert split.personal_account_fen + split.pooled_fen + split.self_pay_fen == bill.total_fen
    for line in split.lines:
        assert all(part.amount_fen > 0 for part in line.parts)
        assert sum(part.amount_fen for part in line.parts) == line.amount_fen
    delta = split.delta
    assert delta.covers(ZERO)
    assert delta.pooled_fen == split.pooled_fen
    assert delta.personal_account_fen == split.personal_account_fen
    assert acc.pooled_fen + delta.pooled_fen <= max(POLICY.annual_pooled_cap_fen, acc.pooled_fen)
    deductible = POLICY.deductible_fen(person.category, level)
    assert delta.deductible_fen <= max(0, deductible - acc.deductible_fen)
    # deterministic
    assert split_bill(bill, CATALOGUE, POLICY, person, level, acc) == split


operations = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "commit", "release", "void", "offline"]),
        st.integers(0, 5),  # a small key space so keys repeat
        st.integers(0, 30_000),
    ),
    max_size=40,
)


@given(operations)
def test_accumulators_never_decrease_except_by_a_void(ops: list[tuple[str, int, int]]) -> None:
    book = AccumulatorBook()
    person = Person(Category.EMPLOYED)
    for action, number, amount in ops:
        key = f"K{number}"
        seen = book.entry(key)
        committed = book.committed("P", 2026)
        if action == "reserve" or action == "offline":
            view = book.view("P", 2026)
            delta = offline_delta(POLICY, person, 1, amount, view)
            if seen is not None:
                continue  # a known key with new figures is a conflict; covered elsewhere
            (book.reserve if action == "reserve" else book.post_offline)(key, "P", 2026, delta)
        elif action == "commit":
            book.commit(key)
        elif action == "release":
            book.release(key)
        else:
            voided = seen is not None and seen.state is EntryState.COMMITTED and book.void(key)
            if voided:
                assert seen is not None
                assert book.committed("P", 2026) == committed - seen.delta
                continue
            book.void(key)
        assert book.committed("P", 2026).covers(committed)
        assert book.view("P", 2026).covers(book.committed("P", 2026))


@given(st.integers(0, 50_000))
def test_the_same_entry_twice_counts_once(amount: int) -> None:
    book = AccumulatorBook()
    delta = Totals(eligible_fen=amount, personal_account_fen=amount)
    assert book.reserve("B1", "P", 2026, delta)
    assert not book.reserve("B1", "P", 2026, delta)
    assert book.commit("B1") and not book.commit("B1")
    assert not book.reserve("B1", "P", 2026, delta)
    assert book.committed("P", 2026) == delta
    assert book.post_offline("D1", "P", 2026, delta)
    assert not book.post_offline("D1", "P", 2026, delta)
    assert book.committed("P", 2026) == delta + delta

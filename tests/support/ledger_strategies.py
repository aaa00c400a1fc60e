"""Hypothesis strategies: random transfer sequences over a few accounts of every kind."""

from __future__ import annotations

from hypothesis import strategies as st

from ledger.core import Account, Transfer, new_account
from ledger.kinds import ALLOWED_PAIRS, AccountKind

OWNERS = {
    AccountKind.PERSONAL_FUND: ("c1", "c2"),
    AccountKind.CARD_ED_SHADOW: ("k1", "k2"),
    AccountKind.CARD_EP_SHADOW: ("k1",),
    AccountKind.ED_LOADS_IN_DOUBT: ("k1",),
    AccountKind.EP_LOADS_IN_DOUBT: ("k1",),
    AccountKind.UNLOADS_IN_DOUBT: ("k1",),
    AccountKind.INSTITUTION_PAYABLE_INSURANCE: ("h1",),
    AccountKind.INSTITUTION_PAYABLE_EP: ("h1",),
    AccountKind.REFUNDS_PAYABLE: ("c1",),
    AccountKind.BANK_CLEARING: ("b1",),
}


def pool() -> list[Account]:
    """One account or more of every kind."""
    return [new_account(kind, owner) for kind in AccountKind for owner in OWNERS.get(kind, ("x",))]


ACCOUNTS = pool()
ALLOWED_ID_PAIRS = sorted(
    (d.id, c.id) for d in ACCOUNTS for c in ACCOUNTS if (d.kind, c.kind) in ALLOWED_PAIRS
)
ANY_IDS = [a.id for a in ACCOUNTS] + ["pf:ghost"]
IDS = [f"t{i}" for i in range(16)]


@st.composite
def transfers(draw: st.DrawFn) -> Transfer:
    if draw(st.integers(0, 9)) < 8:
        debit, credit = draw(st.sampled_from(ALLOWED_ID_PAIRS))
    else:
        debit, credit = draw(st.sampled_from(ANY_IDS)), draw(st.sampled_from(ANY_IDS))
    amount = draw(st.one_of(st.integers(1, 5_000), st.integers(-2, 0), st.just(10**16)))
    return Transfer(
        id=draw(st.sampled_from(IDS)),
        debit_account_id=debit,
        credit_account_id=credit,
        amount_fen=amount,
        code=draw(st.integers(1, 2)),
        reference=draw(st.sampled_from(["", "ref"])),
    )


#: Each step: a batch of 1..4 transfers and whether it is linked.
steps = st.lists(
    st.tuples(st.lists(transfers(), min_size=1, max_size=4), st.booleans()),
    min_size=1,
    max_size=30,
)

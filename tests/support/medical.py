"""Shared fixtures for the medical tests: a small catalogue, the example policy, and hypothesis
strategies for bills over that catalogue."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
from ledger.medical.policy import EXAMPLE, Policy, parse_policy
from ledger.medical.split import Bill, BillLine

A, B, C = Coverage.A, Coverage.B, Coverage.C

CATALOGUE = CatalogueVersion(
    1,
    dt.date(2026, 1, 1),
    {
        "A01": CatalogueItem("A01", "阿莫西林胶囊", "盒", 1000, A),
        "A02": CatalogueItem("A02", "普通门诊诊查费", "次", 500, A),
        "B01": CatalogueItem("B01", "头孢克洛缓释片", "盒", 2000, B, 1000),
        "B02": CatalogueItem("B02", "CT 平扫", "次", 15000, B, 2000),
        "C01": CatalogueItem("C01", "滋补膏方", "剂", 5000, C),
    },
)


def policy(**replace: object) -> Policy:
    import dataclasses

    return dataclasses.replace(parse_policy(EXAMPLE), **replace)  # type: ignore[arg-type]


POLICY = policy()

# Bills over the catalogue, for the property tests (one code the catalogue does not hold).
CODES = [*sorted(CATALOGUE.items), "Z99"]
lines = st.builds(
    BillLine,
    st.sampled_from(CODES),
    st.integers(1, 50),
    st.integers(0, 40_000),
)
bills = st.builds(
    Bill,
    st.lists(lines, min_size=1, max_size=12).map(tuple),
    st.sampled_from([None, "chronic", "unknown"]),
)
# What the bill service accepts: catalogue codes only (an unknown one is refused, unknown_item).
known_bills = st.builds(
    Bill,
    st.lists(
        st.builds(
            BillLine, st.sampled_from(sorted(CATALOGUE.items)), st.integers(1, 50),
            st.integers(0, 40_000),
        ),
        min_size=1,
        max_size=12,
    ).map(tuple),
    st.sampled_from([None, "chronic", "unknown"]),
)

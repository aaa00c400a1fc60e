"""Shared fixtures for the medical tests: a small catalogue and the example policy."""

from __future__ import annotations

import datetime as dt

from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
from ledger.medical.policy import EXAMPLE, Policy, parse_policy

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

"""What an institution may bill (specs/his-api.yaml, "Catalogue codes"). Pure.

A line's code must be in the catalogue in force on the service date: an unknown code — a typo
such as ``a02`` for ``A02`` included, codes being case-sensitive — is refused, never billed as
self-pay, so that a hospital learns of it before the patient pays. And the year's policy says
which billing category each code is of (``[item_categories]``) and which categories each kind of
institution may bill (``[institution_kinds]``): a pharmacy may not bill a bed-day.

>>> import datetime as dt
>>> from ledger.medical.catalogue import CatalogueItem, CatalogueVersion, Coverage
>>> from ledger.medical.policy import EXAMPLE, parse_policy
>>> from ledger.medical.split import Bill, BillLine
>>> items = {c: CatalogueItem(c, c, "日", 100, Coverage.A) for c in ("A01", "B04")}
>>> catalogue = CatalogueVersion(1, dt.date(2026, 1, 1), items)
>>> bill = Bill((BillLine("A01", 1, 100), BillLine("B04", 1, 100)))
>>> unbillable(bill, catalogue, parse_policy(EXAMPLE), "pharmacy").line
2
>>> unbillable(bill, catalogue, parse_policy(EXAMPLE), "hospital") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.medical.catalogue import CatalogueVersion
from ledger.medical.policy import Policy
from ledger.medical.split import Bill


@dataclass(frozen=True, slots=True)
class Unbillable:
    code: str  # unknown_item | category_not_allowed
    line: int  # from 1
    message: str


def unbillable(
    bill: Bill, catalogue: CatalogueVersion, policy: Policy, kind: str | None
) -> Unbillable | None:
    """The first line the institution may not bill, or None."""
    for number, line in enumerate(bill.lines, start=1):
        if catalogue.get(line.code) is None:
            return Unbillable(
                "unknown_item",
                number,
                f"line {number}: {line.code!r} is not in catalogue version {catalogue.number}"
                " (codes are case-sensitive)",
            )
        category = policy.item_category(line.code)
        if kind is not None and not policy.may_bill(kind, category):
            return Unbillable(
                "category_not_allowed",
                number,
                f"line {number}: a {kind} may not bill {line.code} (category {category})",
            )
    return None

"""JSON shapes of bills and splits: what the HIS API returns and what the SQL store keeps.
Pure; `…_to_dict` and `…_from_dict` round-trip exactly.

>>> from ledger.medical.split import Bill, BillLine
>>> bill = Bill((BillLine("A01", 2, 1000),), "chronic")
>>> bill_from_dict(bill_to_dict(bill)) == bill
True
"""

from __future__ import annotations

from typing import Any

from ledger.medical.accumulators import Totals
from ledger.medical.catalogue import Coverage
from ledger.medical.policy import Category
from ledger.medical.split import Bill, BillLine, LineSplit, Part, Reason, Share, Split

Json = dict[str, Any]


def totals_to_dict(totals: Totals) -> Json:
    return {
        "eligible_fen": totals.eligible_fen,
        "deductible_fen": totals.deductible_fen,
        "pooled_fen": totals.pooled_fen,
        "personal_account_fen": totals.personal_account_fen,
        "self_pay_fen": totals.self_pay_fen,
    }


_TOTAL_KEYS = tuple(totals_to_dict(Totals()))
# dict lookups: an enum call costs µs, and a stored split is decoded on the ledger's writer
_COVERAGES = {coverage.value: coverage for coverage in Coverage}
_SHARES = {share.value: share for share in Share}
_CATEGORIES = {category.value: category for category in Category}


def totals_from_dict(data: Json) -> Totals:
    return Totals(*[int(data[key]) for key in _TOTAL_KEYS])


def bill_to_dict(bill: Bill) -> Json:
    return {
        "special_category": bill.special_category,
        "lines": [
            {"code": line.code, "quantity": line.quantity, "unit_price_fen": line.unit_price_fen}
            for line in bill.lines
        ],
    }


def bill_from_dict(data: Json) -> Bill:
    return Bill(
        tuple(
            BillLine(str(line["code"]), int(line["quantity"]), int(line["unit_price_fen"]))
            for line in data["lines"]
        ),
        data.get("special_category"),
    )


def _part_to_dict(part: Part) -> Json:
    return {"share": part.share.value, "amount_fen": part.amount_fen, "reason": part.reason.name}


def _line_to_dict(line: LineSplit) -> Json:
    return {
        "number": line.number,
        "code": line.code,
        "name": line.name,
        "coverage": line.coverage.value if line.coverage else None,
        "quantity": line.quantity,
        "unit_price_fen": line.unit_price_fen,
        "ceiling_fen": line.ceiling_fen,
        "amount_fen": line.amount_fen,
        "parts": [_part_to_dict(part) for part in line.parts],
    }


def split_to_dict(split: Split) -> Json:
    return {
        "rules_version": split.rules_version,
        "policy_year": split.policy_year,
        "catalogue_version": split.catalogue_version,
        "institution_level": split.institution_level,
        "category": split.category.value,
        "special_category": split.special_category,
        "total_fen": split.total_fen,
        "personal_account_fen": split.personal_account_fen,
        "pooled_fen": split.pooled_fen,
        "self_pay_fen": split.self_pay_fen,
        "lines": [_line_to_dict(line) for line in split.lines],
        "accumulator_delta": totals_to_dict(split.delta),
        "notes": list(split.notes),
    }


def _line_from_dict(data: Json) -> LineSplit:
    return LineSplit(
        number=int(data["number"]),
        code=str(data["code"]),
        name=str(data["name"]),
        coverage=_COVERAGES[data["coverage"]] if data["coverage"] else None,
        quantity=int(data["quantity"]),
        unit_price_fen=int(data["unit_price_fen"]),
        ceiling_fen=None if data["ceiling_fen"] is None else int(data["ceiling_fen"]),
        amount_fen=int(data["amount_fen"]),
        parts=tuple(
            Part(_SHARES[part["share"]], int(part["amount_fen"]), Reason[part["reason"]])
            for part in data["parts"]
        ),
    )


def split_from_dict(data: Json) -> Split:
    return Split(
        rules_version=int(data["rules_version"]),
        policy_year=int(data["policy_year"]),
        catalogue_version=int(data["catalogue_version"]),
        institution_level=int(data["institution_level"]),
        category=_CATEGORIES[data["category"]],
        special_category=data["special_category"],
        total_fen=int(data["total_fen"]),
        personal_account_fen=int(data["personal_account_fen"]),
        pooled_fen=int(data["pooled_fen"]),
        self_pay_fen=int(data["self_pay_fen"]),
        lines=tuple(_line_from_dict(line) for line in data["lines"]),
        delta=totals_from_dict(data["accumulator_delta"]),
        notes=tuple(data["notes"]),
    )

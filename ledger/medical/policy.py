"""The insurance policy of one calendar year, read from a TOML file (specs/medical-files.md §2).
Pure: `parse_policy` takes the text.

Ratios are integer basis points (1/10 000); amounts integer fen; institution levels 1..3.

>>> policy = parse_policy(EXAMPLE)
>>> policy.deductible_fen(Category.RETIRED, 2), policy.pooled_bp(Category.EMPLOYED, 3, Coverage.B)
(35000, 7500)
>>> policy.personal_share_bp(50), policy.counts(Counted.OFFLINE_PURCHASES)
(4000, True)
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.medical.catalogue import BP, Coverage

LEVELS = (1, 2, 3)
AGE_MAX = 200
GENERAL = "general"  # the billing category of a catalogue code the policy does not list


def is_category_name(text: str) -> bool:
    """A billing category's name: a lower-case letter, then up to 31 of a-z, 0-9, _."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_")
    return 1 <= len(text) <= 32 and "a" <= text[0] <= "z" and set(text) <= allowed


def is_code(text: str) -> bool:
    """A catalogue code: 1 to 20 printable ASCII characters, no space."""
    return 1 <= len(text) <= 20 and all("!" <= c <= "~" for c in text)


class Category(enum.Enum):
    EMPLOYED = "employed"
    RETIRED = "retired"


class Counted(enum.Enum):
    """What counts towards the deductible besides the eligible part of an item (always)."""

    CLASS_B_SELF_PAY = "class_b_self_pay"  # the 乙 self-pay share of an item
    OFFLINE_PURCHASES = "offline_purchases"  # personal-account purchases with no bill


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class SpecialCategory:
    code: str
    name: str
    pooled_bp_by_level: tuple[int, int, int]


@dataclass(frozen=True)
class ContributionBand:
    age_below: int
    personal_bp: int


@dataclass(frozen=True)
class Policy:
    year: int
    annual_pooled_cap_fen: int
    deductibles: Mapping[Category, tuple[int, int, int]]
    pooled: Mapping[Category, Mapping[Coverage, tuple[int, int, int]]]
    contribution: tuple[ContributionBand, ...]
    special: Mapping[str, SpecialCategory] = field(default_factory=dict)
    counted: frozenset[Counted] = frozenset()
    item_categories: Mapping[str, str] = field(default_factory=dict)  # catalogue code → category
    kind_categories: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kind → may bill

    def item_category(self, code: str) -> str:
        """The billing category of a catalogue code (``general`` unless the policy says)."""
        return self.item_categories.get(code, GENERAL)

    def may_bill(self, kind: str, category: str) -> bool:
        """Whether an institution of `kind` may bill items of `category` (a kind the policy
        does not list may bill every category)."""
        allowed = self.kind_categories.get(kind)
        return allowed is None or category in allowed

    def deductible_fen(self, category: Category, level: int) -> int:
        return self.deductibles[category][_level_index(level)]

    def pooled_bp(self, category: Category, level: int, coverage: Coverage) -> int:
        """The pooled fund's share of the eligible amount above the deductible (0 for 丙)."""
        if coverage is Coverage.C:
            return 0
        return self.pooled[category][coverage][_level_index(level)]

    def special_pooled_bp(self, code: str, level: int) -> int | None:
        special = self.special.get(code)
        return None if special is None else special.pooled_bp_by_level[_level_index(level)]

    def personal_share_bp(self, age: int) -> int:
        """The personal account's share of a contribution at `age`; the pooled fund gets the
        rest."""
        for band in self.contribution:
            if age < band.age_below:
                return band.personal_bp
        raise PolicyError(f"no contribution band for age {age}")

    def counts(self, what: Counted) -> bool:
        return what in self.counted


def _level_index(level: int) -> int:
    if level not in LEVELS:
        raise PolicyError(f"institution level is 1, 2 or 3, not {level}")
    return level - 1


def _int(value: Any, what: str, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError(f"{what} must be a non-negative integer, not {value!r}")
    if maximum is not None and value > maximum:
        raise PolicyError(f"{what} above {maximum}: {value}")
    return value


def _levels(value: Any, what: str, maximum: int | None = None) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != len(LEVELS):
        raise PolicyError(f"{what} is a list of 3 values, institution levels 1, 2, 3")
    first, second, third = (_int(v, what, maximum) for v in value)
    return first, second, third


def _table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{what} must be a table")
    return value


def _by_category(doc: dict[str, Any], key: str) -> dict[Category, Any]:
    table = _table(doc.get(key), key)
    if set(table) != {c.value for c in Category}:
        raise PolicyError(f"{key} needs exactly: employed, retired")
    return {c: table[c.value] for c in Category}


def _pooled(value: Any, what: str) -> dict[Coverage, tuple[int, int, int]]:
    table = _table(value, what)
    if set(table) != {Coverage.A.value, Coverage.B.value}:
        raise PolicyError(f"{what} needs exactly the classes 甲 and 乙")
    return {c: _levels(table[c.value], f"{what}.{c.value}", BP) for c in (Coverage.A, Coverage.B)}


def _contribution(value: Any) -> tuple[ContributionBand, ...]:
    if not isinstance(value, list) or not value:
        raise PolicyError("contribution is a non-empty array of tables")
    bands = tuple(
        ContributionBand(
            _int(_table(band, "contribution").get("age_below"), "age_below", AGE_MAX),
            _int(band.get("personal_bp"), "personal_bp", BP),
        )
        for band in value
    )
    ages = [band.age_below for band in bands]
    if ages != sorted(set(ages)) or ages[-1] != AGE_MAX:
        raise PolicyError(f"contribution bands ascend by age_below and end at {AGE_MAX}")
    return bands


def _special(value: Any) -> dict[str, SpecialCategory]:
    table = _table(value if value is not None else {}, "special")
    out = {}
    for code, spec in table.items():
        spec = _table(spec, f"special.{code}")
        if set(spec) != {"name", "pooled_bp"}:
            raise PolicyError(f"special.{code} has exactly: name, pooled_bp")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"special.{code} needs a name")
        out[code] = SpecialCategory(code, name, _levels(spec.get("pooled_bp"), code, BP))
    return out


def parse_policy(text: str) -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"not TOML: {error}") from None
    known = {
        "year",
        "annual_pooled_cap_fen",
        "deductible_fen",
        "pooled_bp",
        "contribution",
        "special",
        "deductible_counts",
        "item_categories",
        "institution_kinds",
    }
    if unknown := set(doc) - known:
        raise PolicyError(f"unknown keys: {sorted(unknown)}")
    try:
        counted = frozenset(Counted(v) for v in doc.get("deductible_counts", []))
    except (ValueError, TypeError):
        raise PolicyError(f"deductible_counts may hold {[c.value for c in Counted]}") from None
    return Policy(
        year=_int(doc.get("year"), "year"),
        annual_pooled_cap_fen=_int(doc.get("annual_pooled_cap_fen"), "annual_pooled_cap_fen"),
        deductibles={
            c: _levels(v, f"deductible_fen.{c.value}")
            for c, v in _by_category(doc, "deductible_fen").items()
        },
        pooled={
            c: _pooled(v, f"pooled_bp.{c.value}") for c, v in _by_category(doc, "pooled_bp").items()
        },
        contribution=_contribution(doc.get("contribution")),
        special=_special(doc.get("special")),
        counted=counted,
        item_categories=_item_categories(doc.get("item_categories")),
        kind_categories=_kinds(doc.get("institution_kinds")),
    )


def _names(value: Any, what: str, valid: Callable[[str], bool]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and valid(v) for v in value):
        raise PolicyError(f"{what} is a list of {valid.__name__.removeprefix('is_')}s")
    return list(value)


def _item_categories(value: Any) -> dict[str, str]:
    """``[item_categories]``: category name → the catalogue codes of that category."""
    table = _table(value if value is not None else {}, "item_categories")
    out: dict[str, str] = {}
    for category, codes in table.items():
        if not is_category_name(category):
            raise PolicyError(f"item_categories: {category!r} is not a category name")
        for code in _names(codes, f"item_categories.{category}", is_code):
            if out.setdefault(code, category) != category:
                raise PolicyError(f"item_categories: {code} is in two categories")
    return out


def _kinds(value: Any) -> dict[str, frozenset[str]]:
    """``[institution_kinds]``: kind → the categories an institution of that kind may bill."""
    table = _table(value if value is not None else {}, "institution_kinds")
    return {
        kind: frozenset(_names(names, f"institution_kinds.{kind}", is_category_name))
        for kind, names in table.items()
    }


EXAMPLE = """\
year = 2026
annual_pooled_cap_fen = 5000000          # the pooled fund pays at most this per person and year
deductible_counts = ["offline_purchases"] # what counts towards the deductible besides the
                                          # eligible amounts: class_b_self_pay, offline_purchases
[deductible_fen]                          # 起付标准 by person category, institution levels 1, 2, 3
employed = [30000, 50000, 80000]
retired = [20000, 35000, 60000]

[pooled_bp.employed]                      # pooled share above the deductible, levels 1, 2, 3
"甲" = [9000, 8500, 8000]
"乙" = [8500, 8000, 7500]
[pooled_bp.retired]
"甲" = [9500, 9200, 9000]
"乙" = [9000, 8700, 8500]

[[contribution]]                          # personal-account share of a contribution by age
age_below = 35                            # (bands ascending; the last is age_below = 200);
personal_bp = 3000                        # the pooled fund gets the rest
[[contribution]]
age_below = 45
personal_bp = 3500
[[contribution]]
age_below = 200
personal_bp = 4000

[special.chronic]                         # special-expense categories: payable regardless of
name = "门诊慢性病"                        # the deductible, only for persons authorised for them
pooled_bp = [8000, 8000, 8000]            # that year (`medswitch authorise grant PERSON chronic`)

[item_categories]                         # optional: billing category → catalogue codes
drug = ["A01", "A04", "B01", "B03", "C01"]  # (a code not listed is `general`)
examination = ["A03", "B02"]
bed_day = ["B04"]

[institution_kinds]                       # optional: the categories each kind may bill
pharmacy = ["drug"]                       # (a kind not listed bills every category)
"""

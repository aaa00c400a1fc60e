"""The catalogue of drugs and services (药物标准管理): code, name, unit, price ceiling in fen and
coverage class 甲 (covered) / 乙 (covered less a self-pay ratio) / 丙 (not covered), as versions
that each replace the whole list from their effective date. Pure.

File format (specs/medical-files.md), framed by `ledger.medical.recordfile`:

    H|CATALOGUE|<version>|<effective from yyyymmdd>
    D|<code>|<name>|<unit>|<price ceiling fen>|<甲|乙|丙>|<乙 self-pay ratio, basis points>
    T|<record count>|<sum of the price ceilings, fen>
    M|<MAC>

>>> from ledger.medical.recordfile import build
>>> body = build("CATALOGUE", ["3", "20260101"],
...              [["X01", "阿莫西林胶囊", "盒", "1250", "甲", "0"]], amount_total_fen=1250)
>>> version = parse_catalogue(body + b"M|0000000000000000\\n")
>>> version.number, version.items["X01"].coverage.value, version.items["X01"].ceiling_fen
(3, '甲', 1250)
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ledger.medical.recordfile import (
    Framed,
    MedicalFileError,
    build,
    check_total,
    parse,
    parse_int,
)

KIND = "CATALOGUE"
BP = 10_000  # basis points in one


class Coverage(enum.Enum):
    A = "甲"  # covered in full (the pooled share applies to all of it)
    B = "乙"  # covered less the item's self-pay ratio
    C = "丙"  # not covered: self-pay


@dataclass(frozen=True)
class CatalogueItem:
    code: str
    name: str
    unit: str
    ceiling_fen: int  # the highest unit price the insurance recognises
    coverage: Coverage
    self_pay_bp: int = 0  # class 乙: the share the patient pays first, basis points

    def __post_init__(self) -> None:
        if self.ceiling_fen < 0 or not 0 <= self.self_pay_bp <= BP:
            raise ValueError(f"{self.code}: bad ceiling or self-pay ratio")
        if self.coverage is not Coverage.B and self.self_pay_bp:
            raise ValueError(f"{self.code}: only class 乙 has a self-pay ratio")


@dataclass(frozen=True)
class CatalogueVersion:
    number: int
    effective_from: dt.date
    items: Mapping[str, CatalogueItem] = field(default_factory=dict)

    def get(self, code: str) -> CatalogueItem | None:
        return self.items.get(code)


@dataclass(frozen=True)
class CatalogueDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[tuple[CatalogueItem, CatalogueItem], ...]  # (before, after)


def parse_date(text: str, line: int = 0) -> dt.date:
    if len(text) != 8 or not text.isdigit():
        raise MedicalFileError(f"date is not yyyymmdd: {text!r}", line)
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise MedicalFileError(f"no such date: {text!r}", line) from None


def _item(record: tuple[str, ...], line: int) -> CatalogueItem:
    if len(record) != 6:
        raise MedicalFileError("a catalogue record has 6 fields", line)
    code, name, unit, ceiling, coverage, ratio = record
    if not code or not code.isascii() or len(code) > 20 or not name or not unit:
        raise MedicalFileError("code (ASCII, ≤20), name and unit are required", line)
    try:
        cover = Coverage(coverage)
    except ValueError:
        raise MedicalFileError(f"coverage class is 甲, 乙 or 丙, not {coverage!r}", line) from None
    self_pay_bp = parse_int(ratio, "self-pay ratio", line)
    try:
        return CatalogueItem(
            code, name, unit, parse_int(ceiling, "price ceiling", line), cover, self_pay_bp
        )
    except ValueError as error:
        raise MedicalFileError(str(error), line) from None


def catalogue_from_framed(framed: Framed) -> CatalogueVersion:
    if len(framed.header) != 2:
        raise MedicalFileError("the header is H|CATALOGUE|version|effective from", 1)
    number = parse_int(framed.header[0], "version", 1, minimum=1)
    effective = parse_date(framed.header[1], 1)
    items: dict[str, CatalogueItem] = {}
    for line, record in enumerate(framed.records, start=2):
        item = _item(record, line)
        if item.code in items:
            raise MedicalFileError(f"item {item.code} appears twice", line)
        items[item.code] = item
    check_total(framed, sum(item.ceiling_fen for item in items.values()))
    return CatalogueVersion(number, effective, items)


def parse_catalogue(data: bytes) -> CatalogueVersion:
    """Parse and check a catalogue file (the MAC is checked separately, by the HSM)."""
    return catalogue_from_framed(parse(data, KIND))


def build_catalogue(version: CatalogueVersion) -> bytes:
    """The file's bytes before its MAC line; byte-deterministic (items sorted by code)."""
    items = [version.items[code] for code in sorted(version.items)]
    records = [
        [i.code, i.name, i.unit, str(i.ceiling_fen), i.coverage.value, str(i.self_pay_bp)]
        for i in items
    ]
    header = [str(version.number), version.effective_from.strftime("%Y%m%d")]
    total = sum(i.ceiling_fen for i in items)
    return build(KIND, header, records, amount_total_fen=total)


def effective_on(versions: Iterable[CatalogueVersion], day: dt.date) -> CatalogueVersion | None:
    """The version in force on `day`: the latest effective date not after it, then the highest
    version number.

    >>> a, b = CatalogueVersion(1, dt.date(2026, 1, 1)), CatalogueVersion(2, dt.date(2026, 7, 1))
    >>> effective_on([a, b], dt.date(2026, 6, 30)).number
    1
    >>> effective_on([a, b], dt.date(2026, 7, 1)).number
    2
    """
    candidates = [v for v in versions if v.effective_from <= day]
    if not candidates:
        return None
    return max(candidates, key=lambda v: (v.effective_from, v.number))


def diff(before: CatalogueVersion, after: CatalogueVersion) -> CatalogueDiff:
    old, new = before.items, after.items
    return CatalogueDiff(
        added=tuple(sorted(set(new) - set(old))),
        removed=tuple(sorted(set(old) - set(new))),
        changed=tuple((old[c], new[c]) for c in sorted(set(old) & set(new)) if old[c] != new[c]),
    )

"""The reference data the bill service reads: cards and their holders, institution levels,
special-category authorisations, catalogue versions and policy years. A port with an in-memory
implementation here and an SQL one in `ledger.medical.sql_reference`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from ledger.medical.catalogue import CatalogueVersion, effective_on
from ledger.medical.policy import Category, Policy


@dataclass(frozen=True)
class Cardholder:
    card_no: str
    application_serial: str
    person_id: str
    category: Category
    card_status: str = "active"  # active | lost | cancelled | replaced


class Directory(Protocol):
    def cardholder(self, card_no: str) -> Cardholder | None: ...

    def cardholder_by_serial(self, application_serial: str) -> Cardholder | None: ...

    def institution_level(self, institution_id: str) -> int | None: ...

    def institution_kind(self, institution_id: str) -> str | None: ...

    def may_write_health(self, institution_id: str) -> bool:
        """Whether the institution may send cardholders' health data (its ``health_writer``
        attribute; unset: every hospital, nothing else)."""
        ...

    def authorised(self, person_id: str, year: int) -> frozenset[str]: ...

    def catalogue_on(self, day: dt.date) -> CatalogueVersion | None: ...

    def policy(self, year: int) -> Policy | None: ...


HEALTH_WRITER_KINDS = ("hospital",)  # a clinical institution; a pharmacy dispenses


def health_writer(attribute: bool | None, kind: str | None) -> bool:
    """An institution's ``health_writer`` as it applies: set, or by default by its kind.

    >>> health_writer(None, "hospital"), health_writer(None, "pharmacy")
    (True, False)
    >>> health_writer(True, "pharmacy"), health_writer(False, "hospital")
    (True, False)
    """
    return attribute if attribute is not None else kind in HEALTH_WRITER_KINDS


@dataclass
class MemoryDirectory:
    cards: dict[str, Cardholder] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)
    authorisations: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)
    catalogues: list[CatalogueVersion] = field(default_factory=list)
    policies: dict[int, Policy] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # institution → hospital | pharmacy
    health_writers: dict[str, bool] = field(default_factory=dict)  # set explicitly

    def cardholder(self, card_no: str) -> Cardholder | None:
        return self.cards.get(card_no)

    def cardholder_by_serial(self, application_serial: str) -> Cardholder | None:
        found = [c for c in self.cards.values() if c.application_serial == application_serial]
        return found[0] if found else None

    def institution_level(self, institution_id: str) -> int | None:
        return self.levels.get(institution_id)

    def institution_kind(self, institution_id: str) -> str | None:
        return self.kinds.get(institution_id)

    def may_write_health(self, institution_id: str) -> bool:
        kind = self.kinds.get(institution_id)
        return health_writer(self.health_writers.get(institution_id), kind)

    def authorised(self, person_id: str, year: int) -> frozenset[str]:
        return self.authorisations.get((person_id, year), frozenset())

    def catalogue_on(self, day: dt.date) -> CatalogueVersion | None:
        return effective_on(self.catalogues, day)

    def policy(self, year: int) -> Policy | None:
        return self.policies.get(year)

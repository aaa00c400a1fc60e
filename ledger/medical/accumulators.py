"""Per-person yearly accumulators (医保记录) and the reference model of their life cycle. Pure.

A bill's effect on a person's year is a `Totals` delta computed by the split. It is *reserved*
when the bill is approved (so a second bill in flight sees the first's deductible as used),
*committed* once when the bill completes, *released* on reversal, cancellation or expiry, and
*reversed* by a void after completion. Offline purchases with no bill are committed when they
post. Every entry is keyed (a bill id, or a card debit's PSAM terminal number and serial), so a
repeated message changes nothing.

>>> book = AccumulatorBook()
>>> book.reserve("B1", "P1", 2026, Totals(eligible_fen=500, deductible_fen=500))
True
>>> book.view("P1", 2026).deductible_fen, book.committed("P1", 2026).deductible_fen
(500, 0)
>>> book.commit("B1"), book.commit("B1")
(True, False)
>>> book.void("B1"), book.committed("P1", 2026).deductible_fen
(True, 0)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Totals:
    """One person's year, or a bill's contribution to it, in fen."""

    eligible_fen: int = 0  # spending the insurance recognises (after ceilings, 丙, 乙 ratios)
    deductible_fen: int = 0  # deductible consumed
    pooled_fen: int = 0  # paid by the pooled fund
    personal_account_fen: int = 0  # paid from the personal account (the card's ED)
    self_pay_fen: int = 0  # paid by the patient

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def covers(self, other: Totals) -> bool:
        """Every figure at least `other`'s (accumulators never decrease except by a void)."""
        return all(a >= b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True))


ZERO = Totals()


class EntryState(enum.Enum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"
    VOIDED = "voided"


@dataclass(frozen=True)
class Entry:
    key: str
    person_id: str
    year: int
    delta: Totals
    state: EntryState


class ConflictError(ValueError):
    """The same key with a different person, year or delta."""


class AccumulatorBook:
    """The in-memory reference model (the SQL store in `ledger.medical.sql_store` keeps the same
    rules). Not thread-safe: its owner serialises calls."""

    def __init__(self) -> None:
        self._committed: dict[tuple[str, int], Totals] = {}
        self._reserved: dict[tuple[str, int], Totals] = {}
        self._entries: dict[str, Entry] = {}

    def committed(self, person_id: str, year: int) -> Totals:
        return self._committed.get((person_id, year), ZERO)

    def view(self, person_id: str, year: int) -> Totals:
        """Committed plus everything reserved: what the next split starts from."""
        key = (person_id, year)
        return self._committed.get(key, ZERO) + self._reserved.get(key, ZERO)

    def entry(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def _new(self, key: str, person_id: str, year: int, delta: Totals, state: EntryState) -> bool:
        if not delta.covers(ZERO):
            raise ValueError("a delta never decreases an accumulator")
        known = self._entries.get(key)
        if known is not None:
            if (known.person_id, known.year, known.delta) != (person_id, year, delta):
                raise ConflictError(f"{key} was recorded with other figures")
            return False
        self._entries[key] = Entry(key, person_id, year, delta, state)
        bucket = self._reserved if state is EntryState.RESERVED else self._committed
        bucket[(person_id, year)] = bucket.get((person_id, year), ZERO) + delta
        return True

    def reserve(self, key: str, person_id: str, year: int, delta: Totals) -> bool:
        """Reserve a bill's delta; False (nothing changes) when `key` is already known."""
        return self._new(key, person_id, year, delta, EntryState.RESERVED)

    def post_offline(self, key: str, person_id: str, year: int, delta: Totals) -> bool:
        """Commit an offline purchase's delta directly; False when already posted."""
        return self._new(key, person_id, year, delta, EntryState.COMMITTED)

    def _move(self, key: str, source: EntryState, target: EntryState) -> bool:
        entry = self._entries.get(key)
        if entry is None or entry.state is not source:
            return False
        pair = (entry.person_id, entry.year)
        if source is EntryState.RESERVED:
            self._reserved[pair] = self._reserved[pair] - entry.delta
        else:
            self._committed[pair] = self._committed[pair] - entry.delta
        if target is EntryState.COMMITTED:
            self._committed[pair] = self._committed.get(pair, ZERO) + entry.delta
        self._entries[key] = Entry(key, entry.person_id, entry.year, entry.delta, target)
        return True

    def commit(self, key: str) -> bool:
        """Reserved → committed, once; False when not reserved (already committed, released)."""
        return self._move(key, EntryState.RESERVED, EntryState.COMMITTED)

    def release(self, key: str) -> bool:
        """Reserved → released (reversal, cancellation, expiry); False otherwise."""
        return self._move(key, EntryState.RESERVED, EntryState.RELEASED)

    def void(self, key: str) -> bool:
        """Committed → voided, rolling the year back; a reserved entry is released instead."""
        return self._move(key, EntryState.COMMITTED, EntryState.VOIDED) or self.release(key)

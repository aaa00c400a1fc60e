"""The centre's own copy of the card's record book (specs/card-layout.md, "The centre's copy"):
every visit record the centre writes to a card — the 72 bytes the card holds: date,
institution, department, ICD-10 diagnoses, bill id, total and split — kept in ``card_visits``
sealed under the HSM's PERSONAL_DATA key (ledger.personal), the context
``visit|<application serial>|<bill id>`` bound in: a copy moved to another card or bill does not
open, and the database holds no diagnosis in clear. Beside them, ``card_health`` keeps each
person's health data (EF 0019's 92 data bytes) as an authorised institution last sent it
through the HIS API, sealed for ``health|<person id>``, pending until a card is written with it.

The copy is kept before the reply carries the record's script: a card never holds a record the
centre has no copy of. It is one write of its own on the store's writer (the SQLite ledger's, or
PostgreSQL's pool), after the approval's commit — not in the approval's transaction, whose
record it is made from.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ledger.personal import PersonalKeys

COLUMNS = "bill_id, application_serial, sealed, key_version, written_at_us"
SELECT_COPY = f"SELECT {COLUMNS} FROM card_visits WHERE bill_id = ?"
_SET = (
    "application_serial = excluded.application_serial, sealed = excluded.sealed,"
    " key_version = excluded.key_version, written_at_us = excluded.written_at_us"
)
UPSERT_SQLITE = (
    f"INSERT INTO card_visits ({COLUMNS}) VALUES (?, ?, ?, ?, ?)"
    f" ON CONFLICT (bill_id) DO UPDATE SET {_SET}"
)
UPSERT_PG = (
    f"INSERT INTO card_visits ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
    f" ON CONFLICT (bill_id) DO UPDATE SET {_SET}"
)
HEALTH_COLUMNS = "person_id, sealed, key_version, updated_by, updated_at_us, pending"
SELECT_HEALTH = f"SELECT {HEALTH_COLUMNS} FROM card_health WHERE person_id = ?"
_SET_HEALTH = (
    "sealed = excluded.sealed, key_version = excluded.key_version,"
    " updated_by = excluded.updated_by, updated_at_us = excluded.updated_at_us,"
    " pending = excluded.pending"
)
UPSERT_HEALTH_SQLITE = (
    f"INSERT INTO card_health ({HEALTH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT (person_id) DO UPDATE SET {_SET_HEALTH}"
)
UPSERT_HEALTH_PG = (
    f"INSERT INTO card_health ({HEALTH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    f" ON CONFLICT (person_id) DO UPDATE SET {_SET_HEALTH}"
)
HEALTH_WRITTEN = (  # only the data the card was found with: a newer update stays pending
    "UPDATE card_health SET pending = FALSE WHERE person_id = ? AND updated_at_us = ?"
)
HEALTH_WRITTEN_PG = (
    "UPDATE card_health SET pending = FALSE WHERE person_id = $1 AND updated_at_us = $2"
)
VISITS_SHOWN_MAX = 10  # as many as the card's cyclic file holds
# The card's book: the newest visits of any card of the card's holder — a replacement card is
# written with the newest of the cards it replaced (card_book_rows.person_visits), so its book
# holds them too.
SELECT_VISITS_OF = (
    f"SELECT {COLUMNS} FROM card_visits WHERE application_serial IN ("
    "SELECT application_serial FROM cards WHERE cardholder_id = ("
    "SELECT cardholder_id FROM cards WHERE application_serial = ?))"
    f" ORDER BY written_at_us DESC, bill_id DESC LIMIT {VISITS_SHOWN_MAX}"
)
CONSENT_COLUMNS = "institution_id, application_serial, opened_at_us, until_us"
SELECT_CONSENT = (
    f"SELECT {CONSENT_COLUMNS} FROM card_consents"
    " WHERE institution_id = ? AND application_serial = ?"
)
_SET_CONSENT = "opened_at_us = excluded.opened_at_us, until_us = excluded.until_us"
UPSERT_CONSENT_SQLITE = (
    f"INSERT INTO card_consents ({CONSENT_COLUMNS}) VALUES (?, ?, ?, ?)"
    f" ON CONFLICT (institution_id, application_serial) DO UPDATE SET {_SET_CONSENT}"
)
UPSERT_CONSENT_PG = (
    f"INSERT INTO card_consents ({CONSENT_COLUMNS}) VALUES ($1, $2, $3, $4)"
    f" ON CONFLICT (institution_id, application_serial) DO UPDATE SET {_SET_CONSENT}"
)


class VisitCopy(NamedTuple):
    """A row of ``card_visits``: the record sealed, never in clear."""

    bill_id: str
    application_serial: str
    sealed: bytes
    key_version: int
    written_at_us: int


class HealthCopy(NamedTuple):
    """A row of ``card_health``: the person's health data sealed."""

    person_id: str
    sealed: bytes
    key_version: int
    updated_by: str  # the institution
    updated_at_us: int
    pending: bool  # no card of the person written with it yet


class Consent(NamedTuple):
    """A row of ``card_consents``: the cardholder gave the PIN at the institution's POS, which
    may read the centre's copy of the card's book through the HIS until ``until_us``."""

    institution_id: str
    application_serial: str
    opened_at_us: int
    until_us: int


class CopyStore(Protocol):
    """Where copies are kept (`ledger.medical.sql_store.SqlMedicalStore`)."""

    async def keep_visit_async(self, copy: VisitCopy) -> None:
        """Write (or replace: the bill approved again with another record) the bill's copy."""
        ...

    def visit_copy(self, bill_id: str) -> VisitCopy | None: ...

    async def keep_health_async(self, copy: HealthCopy) -> None:
        """Write (or replace) the person's health data."""
        ...

    def health_copy(self, person_id: str) -> HealthCopy | None: ...

    async def health_written_async(self, person_id: str, updated_at_us: int) -> None:
        """The person's health data of ``updated_at_us`` found on a card: no longer pending."""
        ...

    def visit_copies_of(self, application_serial: str) -> list[VisitCopy]:
        """The newest copies of any card of the card's holder, newest first, at most
        VISITS_SHOWN_MAX."""
        ...

    async def open_consent_async(self, consent: Consent) -> None: ...

    def consent(self, institution_id: str, application_serial: str) -> Consent | None: ...


class Signed(NamedTuple):
    """A message the centre signed and its signature (specs/card-layout.md "Signatures"): the
    HIS's book carries the health data's, so a HIS checks them as a POS checks the card's."""

    version: int
    message: bytes
    signature: bytes


class HealthScripts(Protocol):
    """What makes the script bringing a person's health data to a card (the switch's
    ``CentreHealthScripts``: the HSM's commands, each MACed for the card's challenge)."""

    async def __call__(
        self, application_serial: str, key_version: int, data: bytes, card_challenge: bytes
    ) -> list[bytes]:
        """The commands, in order, for EF 0019's 92 data bytes ``data``."""
        ...

    async def signature(self, application_serial: str, data: bytes) -> Signed | None:
        """The centre's signature over the health message of that card for ``data`` (as the
        health script writes it into EF 001B); None: the centre has no signing key."""
        ...


def context_of(application_serial: str, bill_id: str) -> bytes:
    return f"visit|{application_serial}|{bill_id}".encode()


def health_context(person_id: str) -> bytes:
    return f"health|{person_id}".encode()


class VisitCopies:
    """Seals and keeps the centre's copies, finds and opens them. ``keys`` gives the personal
    data keys (looked up in the key store when first needed, kept once found: a centre may
    generate them after the daemon started); it raises while there are none."""

    def __init__(
        self,
        store: CopyStore,
        keys: Callable[[], Awaitable[PersonalKeys]],
        scripts: HealthScripts | None = None,
    ) -> None:
        self._store = store
        self._resolve = keys
        self._keys: PersonalKeys | None = None
        self.scripts = scripts  # None: pending health data wait (no script maker here)

    async def _personal(self) -> PersonalKeys:
        if self._keys is None:
            self._keys = await self._resolve()
        return self._keys

    async def keep(self, application_serial: str, bill_id: str, record: bytes, now_us: int) -> None:
        """The visit ``record`` (72 bytes, as the card will hold it), sealed and kept."""
        keys = await self._personal()
        sealed = await keys.seal_value(context_of(application_serial, bill_id), record)
        copy = VisitCopy(bill_id, application_serial, sealed.sealed, sealed.key_version, now_us)
        await self._store.keep_visit_async(copy)

    async def find(self, application_serial: str, bill_id: str) -> bytes | None:
        """The record kept for the bill, opened for this card; None when none is kept for it
        (none at all, or the bill's copy is another card's). KeyTamperedError when the row was
        altered."""
        copy = await asyncio.to_thread(self._store.visit_copy, bill_id)
        if copy is None or copy.application_serial != application_serial:
            return None
        keys = await self._personal()
        context = context_of(application_serial, bill_id)
        return await keys.open_value(context, copy.sealed, copy.key_version)

    async def keep_health(
        self, person_id: str, institution_id: str, data: bytes, now_us: int
    ) -> None:
        """The person's health data (EF 0019's 92 data bytes), sealed and kept, pending."""
        keys = await self._personal()
        sealed = await keys.seal_value(health_context(person_id), data)
        row = HealthCopy(person_id, sealed.sealed, sealed.key_version, institution_id, now_us, True)
        await self._store.keep_health_async(row)

    async def health(self, person_id: str) -> tuple[HealthCopy, bytes] | None:
        """The person's kept health data, its row and the data opened; None when none."""
        row = await asyncio.to_thread(self._store.health_copy, person_id)
        if row is None:
            return None
        keys = await self._personal()
        clear = await keys.open_value(health_context(person_id), row.sealed, row.key_version)
        return row, clear

    async def health_written(self, person_id: str, updated_at_us: int) -> None:
        await self._store.health_written_async(person_id, updated_at_us)

    async def visits(self, application_serial: str) -> list[bytes]:
        """The card's book as the centre wrote it: the newest visit records of any card of its
        holder (a replacement holds those of the cards it replaced), newest first, opened —
        each under the card it was kept for."""
        rows = await asyncio.to_thread(self._store.visit_copies_of, application_serial)
        if not rows:
            return []
        keys = await self._personal()
        return [
            await keys.open_value(context_of(row.application_serial, row.bill_id), row.sealed,
                                  row.key_version)
            for row in rows
        ]  # fmt: skip

    async def open_consent(self, consent: Consent) -> None:
        await self._store.open_consent_async(consent)

    async def consent(self, institution_id: str, application_serial: str) -> Consent | None:
        """The institution's newest consent window for the card (open or not)."""
        return await asyncio.to_thread(self._store.consent, institution_id, application_serial)


@dataclass(frozen=True, slots=True)
class HealthWritten:
    """The SQLite write of :meth:`CopyStore.health_written_async` (pickles, as `KeepVisit`)."""

    person_id: str
    updated_at_us: int

    def __call__(self, db: sqlite3.Connection) -> None:
        db.execute(HEALTH_WRITTEN, (self.person_id, self.updated_at_us))


@dataclass(frozen=True, slots=True)
class OpenConsent:
    """The SQLite write of a consent window (pickles, as `KeepVisit`)."""

    consent: Consent

    def __call__(self, db: sqlite3.Connection) -> None:
        db.execute(UPSERT_CONSENT_SQLITE, tuple(self.consent))


@dataclass(frozen=True, slots=True)
class KeepHealth:
    """The SQLite write of a person's health data (pickles, as `KeepVisit`)."""

    copy: HealthCopy

    def __call__(self, db: sqlite3.Connection) -> None:
        db.execute(UPSERT_HEALTH_SQLITE, tuple(self.copy))


@dataclass(frozen=True, slots=True)
class KeepVisit:
    """The SQLite write of a copy, run on the ledger's writer (it pickles: the writer may be a
    process of its own)."""

    copy: VisitCopy

    def __call__(self, db: sqlite3.Connection) -> None:
        db.execute(UPSERT_SQLITE, tuple(self.copy))

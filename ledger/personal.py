"""Cardholders' names and ID numbers at rest: sealed through the HSM (its PERSONAL_DATA key, the
row's cardholder id bound in), and the ID number's keyed hash (its PERSONAL_INDEX key) for the
lookups that need equality — so the database holds neither in clear (issue 22, DESIGN §4).

What writes cardholders (`ledger.demo`, `ledger.ledger_files.import_cardholders`) seals with
`PersonalKeys.seal`; what needs them in clear (card issuance, refund files) opens with
`PersonalKeys.open`. A key rotation keeps the earlier data keys in `PersonalKeys.earlier`: each
row names the version that sealed it. Rows written before revision 0009 are sealed by
`seal_clear_cardholders`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from hsm.interface import Hsm
from hsm.keys import KeyRef, KeyUsage
from ledger import schema

DATA_ALIAS = "centre/PERSONAL_DATA"
INDEX_ALIAS = "centre/PERSONAL_INDEX"
CONCURRENT_MAX = 64  # HSM calls in flight for one batch of rows (a network HSM pipelines)
SEAL_CHUNK = 1_000  # clear rows sealed per transaction


class PersonalDataError(ValueError):
    """Personal data that cannot be sealed as it is, or a row without its key."""


class Person(NamedTuple):
    ssn: str  # the ID number
    name: str


class Sealed(NamedTuple):
    """A person as stored: the columns ``ssn_index``, ``personal``, ``personal_key_version``."""

    ssn_index: str
    personal: bytes
    key_version: int

    def columns(self) -> dict[str, Any]:
        return {
            "ssn": None,
            "name": None,
            "ssn_index": self.ssn_index,
            "personal": self.personal,
            "personal_key_version": self.key_version,
        }


class SealedValue(NamedTuple):
    sealed: bytes
    key_version: int  # the PERSONAL_DATA version that sealed it


def _context(cardholder_id: str) -> bytes:
    return f"cardholder|{cardholder_id}".encode()


@dataclass(frozen=True, slots=True)
class PersonalKeys:
    """The HSM and the references of the keys personal data live under (no key material)."""

    hsm: Hsm
    data: KeyRef  # PERSONAL_DATA, the newest version: seals
    index: KeyRef  # PERSONAL_INDEX
    earlier: tuple[KeyRef, ...] = ()  # earlier PERSONAL_DATA versions: open older rows

    def __post_init__(self) -> None:
        self.data.require(KeyUsage.PERSONAL_DATA)
        self.index.require(KeyUsage.PERSONAL_INDEX)
        for key in self.earlier:
            key.require(KeyUsage.PERSONAL_DATA)

    async def ssn_index(self, ssn: str) -> str:
        return (await self.hsm.index_personal(self.index, ssn.encode())).hex()

    async def seal(self, cardholder_id: str, person: Person) -> Sealed:
        for value in person:
            if "\n" in value:
                raise PersonalDataError("an ID number or name holds a line break")
        clear = f"{person.ssn}\n{person.name}".encode()
        personal = await self.hsm.encrypt_personal(self.data, _context(cardholder_id), clear)
        return Sealed(await self.ssn_index(person.ssn), personal, self.data.version)

    async def open(self, cardholder_id: str, personal: bytes, key_version: int) -> Person:
        key = self._version(key_version)
        clear = await self.hsm.decrypt_personal(key, _context(cardholder_id), personal)
        ssn, _, name = clear.decode().partition("\n")
        return Person(ssn, name)

    async def seal_value(self, context: bytes, clear: bytes) -> SealedValue:
        """Any personal value (a visit record, health data) sealed for ``context``."""
        sealed = await self.hsm.encrypt_personal(self.data, context, clear)
        return SealedValue(sealed, self.data.version)

    async def open_value(self, context: bytes, sealed: bytes, key_version: int) -> bytes:
        """What `seal_value` sealed for ``context`` under the PERSONAL_DATA ``key_version``."""
        return await self.hsm.decrypt_personal(self._version(key_version), context, sealed)

    def _version(self, version: int) -> KeyRef:
        for key in (self.data, *self.earlier):
            if key.version == version:
                return key
        raise PersonalDataError(f"no {DATA_ALIAS} v{version}: its row cannot be opened")

    async def seal_all(self, people: Sequence[tuple[str, Person]]) -> list[Sealed]:
        """`seal` of each (cardholder id, person), up to `CONCURRENT_MAX` at a time."""
        sealed: list[Sealed] = []
        for start in range(0, len(people), CONCURRENT_MAX):
            chunk = people[start : start + CONCURRENT_MAX]
            sealed += await asyncio.gather(*(self.seal(i, p) for i, p in chunk))
        return sealed

    async def open_rows(self, rows: Iterable[tuple[str, bytes, int]]) -> dict[str, Person]:
        """Each (cardholder id, personal, key version) opened, by cardholder id."""
        rows = list(rows)
        found: dict[str, Person] = {}
        for start in range(0, len(rows), CONCURRENT_MAX):
            chunk = rows[start : start + CONCURRENT_MAX]
            people = await asyncio.gather(*(self.open(*row) for row in chunk))
            found.update((row[0], person) for row, person in zip(chunk, people, strict=True))
        return found


async def people(engine: Engine, keys: PersonalKeys, ids: Iterable[str]) -> dict[str, Person]:
    """The named cardholders in clear (those on file), by id."""
    c = schema.cardholders.c
    wanted = sorted(set(ids))
    rows: list[tuple[str, bytes, int]] = []

    def read() -> None:
        with engine.connect() as connection:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                query = select(c.id, c.personal, c.personal_key_version).where(c.id.in_(chunk))
                for row in connection.execute(query):
                    if row.personal is None:
                        raise PersonalDataError(
                            f"cardholder {row.id} is not sealed yet (seal_clear_cardholders)"
                        )
                    rows.append((row.id, bytes(row.personal), int(row.personal_key_version)))

    await asyncio.to_thread(read)
    return await keys.open_rows(rows)


async def seal_clear_cardholders(engine: Engine, keys: PersonalKeys) -> int:
    """Seal the rows written in clear before revision 0009 and empty their clear columns (on
    SQLite with secure_delete, so the freed cells are zeroed, then a checkpoint that takes the
    new pages into the file); how many were sealed."""
    total = 0
    while found := await asyncio.to_thread(_clear_rows, engine):
        sealed = await keys.seal_all(found)
        await asyncio.to_thread(_write_sealed, engine, found, sealed)
        total += len(found)
    if total and engine.dialect.name == "sqlite":  # the clear pages' last copies: overwritten
        await asyncio.to_thread(_checkpoint, engine)
    return total


def _checkpoint(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _clear_rows(engine: Engine) -> list[tuple[str, Person]]:
    c = schema.cardholders.c
    with engine.connect() as connection:
        query = select(c.id, c.ssn, c.name).where(c.personal.is_(None)).limit(SEAL_CHUNK)
        return [(r.id, Person(r.ssn, r.name)) for r in connection.execute(query)]


def _write_sealed(engine: Engine, found: list[tuple[str, Person]], sealed: list[Sealed]) -> None:
    c = schema.cardholders.c
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA secure_delete=ON")
        for (cardholder_id, _), row in zip(found, sealed, strict=True):
            statement = update(schema.cardholders).where(c.id == cardholder_id)
            connection.execute(statement.values(**row.columns()))

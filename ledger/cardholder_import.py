"""`import_cardholders`: a cardholders file (`ledger.ledger_files`) registered — new cardholders
added, changed ones updated, never an ID number changed — with names and ID numbers sealed at
rest (`ledger.personal`): an ID number is found by its keyed hash, a stored name compared once
opened through the HSM, and nothing personal is written in clear.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update

from hsm.interface import Hsm
from hsm.keys import KeyRef
from ledger import schema
from ledger.core import Ledger
from ledger.events.common import cardholder_accounts
from ledger.ledger_files import (
    CARDHOLDERS,
    CHUNK,
    CardholderImport,
    CardholderRecord,
    Progress,
    cardholders_from_framed,
    known_units,
)
from ledger.medical import filemac
from ledger.medical.recordfile import MedicalFileError, parse
from ledger.medical.sql_store import write_transaction
from ledger.personal import Person, PersonalKeys, seal_clear_cardholders


def _plain(record: CardholderRecord) -> dict[str, Any]:
    """The columns stored as they are (the sealed ones apart)."""
    return {
        "category": record.category.value,
        "birth_date": record.birth_date,
        "unit_id": record.unit_id,
    }


async def import_cardholders(
    engine: Engine,
    ledger: Ledger,
    hsm: Hsm,
    file_key: KeyRef,
    data: bytes,
    personal: PersonalKeys,
    progress: Progress | None = None,
) -> CardholderImport:
    """Register the file's cardholders (new ones added, changed ones updated — never their ID
    number — in one transaction) and open their ledger accounts. Checked whole first. Rows
    written in clear before personal data were sealed are sealed first."""
    framed = parse(data, CARDHOLDERS)
    await filemac.verify(hsm, file_key, framed)
    parsed = await cardholders_from_framed(hsm, file_key, framed, progress)
    units = {r.unit_id for r in parsed.records}
    if missing := sorted(units - known_units(engine, units)):
        raise MedicalFileError(f"unknown employer unit(s): {', '.join(missing[:5])}")
    await seal_clear_cardholders(engine, personal)
    indexes = {r.ssn: await personal.ssn_index(r.ssn) for r in parsed.records}
    c = schema.cardholders.c
    columns = (c.id, c.ssn_index, c.personal, c.personal_key_version, c.category, c.birth_date,
               c.unit_id)  # fmt: skip
    added: list[CardholderRecord] = []
    changed: list[tuple[CardholderRecord, bool]] = []  # (record, its name changed)
    with write_transaction(engine) as connection:
        existing: dict[str, Any] = {}
        by_index: dict[str, str] = {}
        for chunk in _chunks([r.cardholder_id for r in parsed.records]):
            for row in connection.execute(select(*columns).where(c.id.in_(chunk))):
                existing[row.id] = row
        for chunk in _chunks(sorted(set(indexes.values()))):
            query = select(c.id, c.ssn_index).where(c.ssn_index.in_(chunk))
            by_index.update({row.ssn_index: row.id for row in connection.execute(query)})
        stored = await personal.open_rows(
            (row.id, bytes(row.personal), int(row.personal_key_version))
            for row in existing.values()
        )
        for line, record in enumerate(parsed.records, start=2):
            owner = by_index.get(indexes[record.ssn])
            if owner is not None and owner != record.cardholder_id:
                raise MedicalFileError(
                    f"ID number of cardholder {record.cardholder_id} is registered to another", line
                )
            before = existing.get(record.cardholder_id)
            if before is None:
                added.append(record)
            elif before.ssn_index != indexes[record.ssn]:
                raise MedicalFileError(
                    f"cardholder {record.cardholder_id} is registered with another ID number", line
                )
            else:
                renamed = stored[record.cardholder_id].name != record.name
                plain = {k: getattr(before, k) for k in ("category", "birth_date", "unit_id")}
                if renamed or plain != _plain(record):
                    changed.append((record, renamed))
        if added:
            people = [(r.cardholder_id, Person(r.ssn, r.name)) for r in added]
            sealed = await personal.seal_all(people)
            rows = [
                {"id": r.cardholder_id, **_plain(r), **s.columns()}
                for r, s in zip(added, sealed, strict=True)
            ]
            connection.execute(schema.cardholders.insert(), rows)
        for record, renamed in changed:
            values = _plain(record)
            if renamed:
                person = Person(record.ssn, record.name)
                values.update((await personal.seal(record.cardholder_id, person)).columns())
            connection.execute(
                update(schema.cardholders).where(c.id == record.cardholder_id).values(**values)
            )
    accounts = [a for r in parsed.records for a in cardholder_accounts(r.cardholder_id)]
    if accounts:
        await ledger.open_accounts(accounts)
    unchanged = len(parsed.records) - len(added) - len(changed)
    return CardholderImport(parsed, len(added), len(changed), unchanged)


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]

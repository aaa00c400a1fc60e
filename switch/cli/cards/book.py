"""The card's record book at issuance (specs/card-layout.md, "Issuance and replacement"):

- `cards issue --health FILE`: initial health data (switch.card_io.health_input's JSON lines),
  kept sealed in ``card_health`` (pending) and carried in the batch; a cardholder the file does
  not name carries the centre's copy of their health data, if any (a replacement card);
- `cards personalize`: the batch's health data and the person's newest visits the centre kept
  (of their earlier cards) written into the new card under its record key; the health data
  marked written (pending false) when the centre's copy is still what the card got;
- `cards activate` (a bureau's cards): the same mark, for the health data the batch carried.

Sealing and opening are the HSM's (PERSONAL_DATA), looked up only when something is to be
sealed or opened: a deployment without health data or visits needs no personal-data key here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click
import sqlalchemy as sa

from hsm.interface import Hsm
from ledger.events.common import CENTRE
from ledger.medical import card_book_rows as rows
from ledger.medical.card_copies import HealthCopy, context_of, health_context
from ledger.personal import PersonalKeys
from messages.card_records import HealthData
from switch.card_io.health_input import read_health_file
from switch.card_io.issuance import IssuanceRecord
from switch.card_io.record_book import BookCopy
from switch.key_home import Home, personal_keys


class Personal:
    """The centre's personal-data keys, looked up on first use."""

    def __init__(self, hsm: Hsm, home: Home) -> None:
        self._hsm = hsm
        self._home = home
        self._keys: PersonalKeys | None = None

    async def keys(self) -> PersonalKeys:
        if self._keys is None:
            self._keys = await personal_keys(self._hsm, self._home.store)
        return self._keys


def health_file(path: Path | None, holders: Iterable[str], at: str) -> dict[str, HealthData]:
    """The --health file's data by cardholder (updated by the centre, at ``at``); a click error
    naming the line and field of the first that does not fit, or a cardholder who gets no card
    in this issue."""
    if path is None:
        return {}
    try:
        lines = read_health_file(path.read_text(encoding="utf-8"), CENTRE, at)
    except (ValueError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{path}: {error}") from None
    getting = set(holders)
    for line in lines:
        if line.cardholder_id not in getting:
            raise click.ClickException(
                f"{path}: line {line.line}: cardholder_id: {line.cardholder_id} gets no card"
                " in this issue"
            )
    return {line.cardholder_id: line.health for line in lines}


async def health_to_issue(
    engine: sa.Engine, personal: Personal, holders: Iterable[str], given: dict[str, HealthData]
) -> dict[str, HealthData]:
    """The health data each new card carries: given now, else the centre's copy (if any)."""
    if given:
        await personal.keys()  # before anything is written: they will be sealed
    found = dict(given)
    for holder in holders:
        if holder in found:
            continue
        row = rows.person_health(engine, holder)
        if row is not None:
            keys = await personal.keys()
            clear = await keys.open_value(health_context(holder), row.sealed, row.key_version)
            found[holder] = HealthData.decode(clear)
    return found


async def keep_given(
    engine: sa.Engine, personal: Personal, given: dict[str, HealthData], now_us: int
) -> None:
    """The health data given at issuance, sealed into ``card_health``, pending."""
    for holder, health in sorted(given.items()):
        keys = await personal.keys()
        sealed = await keys.seal_value(health_context(holder), health.encode())
        copy = HealthCopy(holder, sealed.sealed, sealed.key_version, CENTRE, now_us, True)
        rows.keep_health(engine, copy)


async def book_of(engine: sa.Engine, personal: Personal, record: IssuanceRecord) -> BookCopy:
    """What the new card's record book gets: the batch's health data, and the person's newest
    visits the centre kept (their earlier cards'), opened, oldest first."""
    kept = rows.person_visits(engine, record.cardholder_id)
    visits = []
    for copy in kept:
        keys = await personal.keys()
        context = context_of(copy.application_serial, copy.bill_id)
        visits.append(await keys.open_value(context, copy.sealed, copy.key_version))
    return BookCopy(record.health, tuple(visits))


async def mark_written(engine: sa.Engine, personal: Personal, record: IssuanceRecord) -> bool:
    """``pending`` false when the centre's copy of the person's health data is what the card
    was written with (a newer update stays pending: it reaches the card at its next contact)."""
    if record.health is None:
        return False
    row = rows.person_health(engine, record.cardholder_id)
    if row is None or not row.pending:
        return False
    keys = await personal.keys()
    clear = await keys.open_value(health_context(row.person_id), row.sealed, row.key_version)
    if clear != record.health.encode():
        return False
    return rows.health_written(engine, row.person_id, row.updated_at_us)

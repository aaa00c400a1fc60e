"""The blacklist as operators keep it: list, add, remove — each change a new list version
(shared with loss reports and unlosses: one sequence), with its reason and the operator's note.
Terminals get the changes at their next blacklist download (0800, 60.3 = 370); a card on the
list gets no offline purchase. The card's own status (online) is the loss report's business
(`medswitch cards`, the bank counters), not this list's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger import schema
from switch.estate.common import EstateError, audit, changing, limit_of, now_us

B = schema.blacklist
C = schema.cards
#: Reasons an operator may give (loss reports, cancellations and replacements add their own:
#: lost, cancelled, replaced).
OPERATOR_REASONS = ("fraud", "stolen", "suspended", "other")
_SERIAL = re.compile(r"[0-9A-Fa-f]{1,20}")
_BLACKLIST_LOCK = 0x626C6B6C  # switch.pg_stores.BLACKLIST_LOCK: one version at a time


@dataclass(frozen=True, slots=True)
class Entry:
    application_serial: str
    reason: str
    version: int
    removed_version: int | None
    added_at_us: int
    note: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "application_serial": self.application_serial, "reason": self.reason,
            "version": self.version, "removed_version": self.removed_version,
            "added_at_us": self.added_at_us, "note": self.note,
        }


_COLUMNS = (B.c.application_serial, B.c.reason, B.c.version, B.c.removed_version,
            B.c.added_at_us, B.c.note)


def _entry(row: Any) -> Entry:
    removed = None if row[3] is None else int(row[3])
    return Entry(row[0], row[1], int(row[2]), removed, int(row[4]), row[5])


def current_version(connection: Any) -> int:
    row = connection.execute(sa.select(
        sa.func.coalesce(sa.func.max(B.c.version), 0),
        sa.func.coalesce(sa.func.max(B.c.removed_version), 0),
    )).first()
    return max(int(row[0]), int(row[1]))


def list_entries(
    engine: Any, *, include_removed: bool = False, after_version: int = 0, limit: int = 200
) -> tuple[int, list[Entry]]:
    """The list's version and its entries (in force, or all), newest first."""
    query = sa.select(*_COLUMNS).order_by(B.c.version.desc()).limit(limit_of(limit))
    if not include_removed:
        query = query.where(B.c.removed_version.is_(None))
    if after_version:
        query = query.where(B.c.version > after_version)
    with engine.connect() as connection:
        return current_version(connection), [_entry(row) for row in connection.execute(query)]


def serial_of(connection: Any, card: str) -> str:
    """A card number (in the card table) or an application serial (hex) → the serial."""
    row = connection.execute(sa.select(C.c.application_serial).where(C.c.card_no == card)).first()
    if row is not None:
        return str(row[0])
    if not _SERIAL.fullmatch(card):
        raise EstateError("give a card number on file or an application serial (hex)")
    return card.upper()


def _lock(connection: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(?)", (_BLACKLIST_LOCK,))


def add_entry(engine: Any, actor: str, card: str, reason: str, note: str = "") -> Entry:
    if reason not in OPERATOR_REASONS:
        raise EstateError(f"a reason is one of {', '.join(OPERATOR_REASONS)}")
    if len(note) > 200:
        raise EstateError("a note is at most 200 characters")
    with changing(engine) as connection:
        _lock(connection)
        serial = serial_of(connection, card)
        listed = connection.execute(sa.select(B.c.version).where(
            B.c.application_serial == serial, B.c.removed_version.is_(None))).first()
        if listed is not None:
            raise EstateError(f"{serial} is on the blacklist since version {listed[0]}")
        version = current_version(connection) + 1
        connection.execute(sa.insert(B).values(
            application_serial=serial, reason=reason, version=version, removed_version=None,
            added_at_us=now_us(), note=note or None,
        ))
        audit(connection, actor, "blacklist.add", serial,
              {"reason": reason, "version": version, "note": note})
        row = connection.execute(sa.select(*_COLUMNS).where(
            B.c.application_serial == serial, B.c.version == version)).first()
        return _entry(row)


def remove_entry(engine: Any, actor: str, card: str, note: str) -> Entry:
    """Every entry of the card in force is removed under one new version; ``note`` says why."""
    if not note.strip() or len(note) > 200:
        raise EstateError("say why the entry is removed (a note of 1 to 200 characters)")
    with changing(engine) as connection:
        _lock(connection)
        serial = serial_of(connection, card)
        rows = connection.execute(sa.select(*_COLUMNS).where(
            B.c.application_serial == serial, B.c.removed_version.is_(None))).all()
        if not rows:
            raise EstateError(f"{serial} is not on the blacklist")
        kept = sorted({row[1] for row in rows} - set(OPERATOR_REASONS))
        if kept:
            raise EstateError(
                f"{serial} is listed as {', '.join(kept)}: a card status's entry leaves the "
                "list with the card's status (unloss), not by hand"
            )
        version = current_version(connection) + 1
        connection.execute(sa.update(B).where(
            B.c.application_serial == serial, B.c.removed_version.is_(None)
        ).values(removed_version=version))
        audit(connection, actor, "blacklist.remove", serial,
              {"version": version, "reasons": sorted({row[1] for row in rows}), "note": note})
        first = _entry(rows[0])
        return Entry(first.application_serial, first.reason, first.version, version,
                     first.added_at_us, first.note)

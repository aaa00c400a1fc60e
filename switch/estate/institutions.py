"""Institutions: hospitals, pharmacies, banks, employer units. Add, list, show, disable,
enable; authorise to write cardholders' health data, or revoke it (``health_writer``: unset,
every hospital may and nothing else). A disabled institution's terminals are answered 97 (the
daemon reads a terminal's institution with it), its HIS credentials stay as they are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger import schema
from ledger.medical.directory import health_writer
from switch.estate.common import EstateError, NotFound, audit, changing, limit_of

INST = schema.institutions
KINDS = ("hospital", "pharmacy", "bank", "employer_unit", "centre")
_ID = re.compile(r"[0-9A-Za-z_.-]{1,32}")


@dataclass(frozen=True, slots=True)
class Institution:
    institution_id: str
    kind: str
    name: str
    level: int | None
    settlement_bank_id: str | None
    status: str
    terminals: int
    health_writer: bool  # may send cardholders' health data (set, or by default by kind)

    def as_json(self) -> dict[str, object]:
        return {
            "institution_id": self.institution_id, "kind": self.kind, "name": self.name,
            "level": self.level, "settlement_bank_id": self.settlement_bank_id,
            "status": self.status, "terminals": self.terminals,
            "health_writer": self.health_writer,
        }


def _query() -> sa.Select[Any]:
    counted = sa.select(
        schema.terminals.c.institution_id, sa.func.count().label("n")
    ).group_by(schema.terminals.c.institution_id).subquery()
    return sa.select(
        INST.c.id, INST.c.kind, INST.c.name, INST.c.level, INST.c.settlement_bank_id, INST.c.status,
        sa.func.coalesce(counted.c.n, 0), INST.c.health_writer,
    ).select_from(INST.outerjoin(counted, counted.c.institution_id == INST.c.id))


def _institution(row: Any) -> Institution:
    level = None if row[3] is None else int(row[3])
    writer = health_writer(None if row[7] is None else bool(row[7]), row[1])
    return Institution(row[0], row[1], row[2], level, row[4], row[5], int(row[6]), writer)


def _get(connection: Any, institution_id: str) -> Institution:
    row = connection.execute(_query().where(INST.c.id == institution_id)).first()
    if row is None:
        raise NotFound(f"no institution {institution_id}")
    return _institution(row)


def list_institutions(
    engine: Any, *, kind: str | None = None, status: str | None = None, limit: int = 200
) -> list[Institution]:
    query = _query().order_by(INST.c.id).limit(limit_of(limit))
    if kind:
        query = query.where(INST.c.kind == kind)
    if status:
        query = query.where(INST.c.status == status)
    with engine.connect() as connection:
        return [_institution(row) for row in connection.execute(query)]


def show_institution(engine: Any, institution_id: str) -> Institution:
    with engine.connect() as connection:
        return _get(connection, institution_id)


def add_institution(
    engine: Any, actor: str, institution_id: str, kind: str, name: str, *,
    level: int | None = None, settlement_bank_id: str | None = None,
) -> Institution:
    if not _ID.fullmatch(institution_id):
        raise EstateError("an institution id is 1 to 32 letters, digits, '_', '.' or '-'")
    if kind not in KINDS:
        raise EstateError(f"an institution's kind is one of {', '.join(KINDS)}")
    if not name.strip() or len(name) > 120:
        raise EstateError("an institution's name is 1 to 120 characters")
    if level is not None and not 1 <= level <= 3:
        raise EstateError("a level is 1, 2 or 3")
    with changing(engine) as connection:
        if connection.execute(sa.select(INST.c.id).where(INST.c.id == institution_id)).first():
            raise EstateError(f"institution {institution_id} exists")
        if settlement_bank_id is not None:
            bank = _get(connection, settlement_bank_id)
            if bank.kind != "bank":
                raise EstateError(f"{settlement_bank_id} is no bank")
        connection.execute(sa.insert(INST).values(
            id=institution_id, kind=kind, name=name.strip(), level=level,
            settlement_bank_id=settlement_bank_id,
        ))
        audit(connection, actor, "institutions.add", institution_id,
              {"kind": kind, "name": name.strip(), "level": level, "bank": settlement_bank_id})
        return _get(connection, institution_id)


def set_institution_status(
    engine: Any, actor: str, institution_id: str, status: str
) -> Institution:
    if status not in ("active", "disabled"):
        raise EstateError("an institution is enabled (active) or disabled")
    with changing(engine) as connection:
        before = _get(connection, institution_id)
        if before.status == status:
            raise EstateError(f"institution {institution_id} is already {status}")
        connection.execute(sa.update(INST).where(INST.c.id == institution_id).values(status=status))
        verb = "enable" if status == "active" else "disable"
        audit(connection, actor, f"institutions.{verb}", institution_id, {"was": before.status})
        return _get(connection, institution_id)


def set_health_writer(engine: Any, actor: str, institution_id: str, allowed: bool) -> Institution:
    """Authorise the institution to write cardholders' health data (``allowed``), or revoke it;
    audited (``institutions.authorise-health`` / ``institutions.revoke-health``). Refused when
    it already is as asked."""
    with changing(engine) as connection:
        before = _get(connection, institution_id)
        if before.health_writer == allowed:
            state = "authorised" if allowed else "not authorised"
            raise EstateError(
                f"institution {institution_id} is already {state} to write health data"
            )
        connection.execute(
            sa.update(INST).where(INST.c.id == institution_id).values(health_writer=allowed)
        )
        verb = "authorise-health" if allowed else "revoke-health"
        audit(connection, actor, f"institutions.{verb}", institution_id,
              {"was": before.health_writer, "kind": before.kind})
        return _get(connection, institution_id)

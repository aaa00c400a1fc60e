"""Terminals and their PSAMs: add, list, show, disable, enable, move, replace the PSAM.

A terminal's status is ``active`` or ``disabled`` (older rows may say ``suspended`` or
``closed``); anything but ``active`` is answered 97 at its next message (the daemon forgets the
record it kept when the estate's change count moves). A PSAM belongs to an institution and is
bound to at most one terminal of that institution; a replaced PSAM is ``retired``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger import schema
from switch.estate.common import EstateError, NotFound, audit, changing, limit_of

T = schema.terminals
P = schema.psams
KINDS = ("pos", "kiosk", "bank_counter")
TERMINAL_STATUSES = ("active", "disabled")
PSAM_STATUSES = ("active", "disabled", "retired")
_TERMINAL_ID = re.compile(r"[0-9A-Za-z]{8}")
_GROUP = re.compile(r"[0-9A-Za-z_.-]{1,32}")


@dataclass(frozen=True, slots=True)
class Terminal:
    terminal_id: str
    institution_id: str
    kind: str
    status: str
    batch_no: int
    group: str | None
    psam_serial: str | None  # the PSAM bound to it, if any

    def as_json(self) -> dict[str, object]:
        return {
            "terminal_id": self.terminal_id, "institution_id": self.institution_id,
            "kind": self.kind, "status": self.status, "batch_no": self.batch_no,
            "group": self.group, "psam_serial": self.psam_serial,
        }


@dataclass(frozen=True, slots=True)
class Psam:
    serial: str
    psam_terminal_no: str
    institution_id: str
    terminal_id: str | None
    key_version: int
    status: str

    def as_json(self) -> dict[str, object]:
        return {
            "serial": self.serial, "psam_terminal_no": self.psam_terminal_no,
            "institution_id": self.institution_id, "terminal_id": self.terminal_id,
            "key_version": self.key_version, "status": self.status,
        }


def _terminals_query() -> sa.Select[Any]:
    bound = sa.select(P.c.terminal_id, sa.func.min(P.c.serial).label("serial")).where(
        P.c.status == "active", P.c.terminal_id.is_not(None)
    ).group_by(P.c.terminal_id).subquery()
    return sa.select(
        T.c.id, T.c.institution_id, T.c.kind, T.c.status, T.c.batch_no, T.c.param_group,
        bound.c.serial,
    ).select_from(T.outerjoin(bound, bound.c.terminal_id == T.c.id))


def _terminal(row: Any) -> Terminal:
    return Terminal(row[0], row[1], row[2], row[3], int(row[4]), row[5], row[6])


def list_terminals(
    engine: Any, *, institution: str | None = None, status: str | None = None, limit: int = 200
) -> list[Terminal]:
    query = _terminals_query().order_by(T.c.id).limit(limit_of(limit))
    if institution:
        query = query.where(T.c.institution_id == institution)
    if status:
        query = query.where(T.c.status == status)
    with engine.connect() as connection:
        return [_terminal(row) for row in connection.execute(query)]


def show_terminal(engine: Any, terminal_id: str) -> Terminal:
    with engine.connect() as connection:
        return _get_terminal(connection, terminal_id)


def _get_terminal(connection: Any, terminal_id: str) -> Terminal:
    row = connection.execute(_terminals_query().where(T.c.id == terminal_id)).first()
    if row is None:
        raise NotFound(f"no terminal {terminal_id}")
    return _terminal(row)


def _check_institution(connection: Any, institution_id: str) -> None:
    row = connection.execute(
        sa.select(schema.institutions.c.status).where(schema.institutions.c.id == institution_id)
    ).first()
    if row is None:
        raise NotFound(f"no institution {institution_id}")
    if row[0] != "active":
        raise EstateError(f"institution {institution_id} is {row[0]}")


def check_group(group: str | None) -> str | None:
    if group is not None and not _GROUP.fullmatch(group):
        raise EstateError("a group is 1 to 32 letters, digits, '_', '.' or '-'")
    return group


def add_terminal(
    engine: Any, actor: str, terminal_id: str, institution_id: str, kind: str,
    group: str | None = None,
) -> Terminal:
    if not _TERMINAL_ID.fullmatch(terminal_id):
        raise EstateError("a terminal id is 8 letters or digits (field 41)")
    if kind not in KINDS:
        raise EstateError(f"a terminal's kind is one of {', '.join(KINDS)}")
    check_group(group)
    with changing(engine) as connection:
        if connection.execute(sa.select(T.c.id).where(T.c.id == terminal_id)).first():
            raise EstateError(f"terminal {terminal_id} exists")
        _check_institution(connection, institution_id)
        connection.execute(sa.insert(T).values(
            id=terminal_id, institution_id=institution_id, kind=kind, param_group=group
        ))
        audit(connection, actor, "terminals.add", terminal_id,
              {"institution": institution_id, "kind": kind, "group": group})
        return _get_terminal(connection, terminal_id)


def set_terminal_status(engine: Any, actor: str, terminal_id: str, status: str) -> Terminal:
    """``disabled`` (answered 97 from its next message) or ``active`` again."""
    if status not in TERMINAL_STATUSES:
        raise EstateError(f"a terminal's status is one of {', '.join(TERMINAL_STATUSES)}")
    with changing(engine) as connection:
        before = _get_terminal(connection, terminal_id)
        if before.status == status:
            raise EstateError(f"terminal {terminal_id} is already {status}")
        connection.execute(sa.update(T).where(T.c.id == terminal_id).values(status=status))
        verb = "enable" if status == "active" else "disable"
        audit(connection, actor, f"terminals.{verb}", terminal_id, {"was": before.status})
        return _get_terminal(connection, terminal_id)


def move_terminal(
    engine: Any, actor: str, terminal_id: str, *, institution_id: str | None = None,
    group: str | None = None, no_group: bool = False,
) -> Terminal:
    """To another institution (its PSAM, which belongs to the old one, must be replaced
    first) and/or another parameter group (``no_group``: none)."""
    if institution_id is None and group is None and not no_group:
        raise EstateError("move where? give an institution and/or a group")
    check_group(group)
    with changing(engine) as connection:
        before = _get_terminal(connection, terminal_id)
        values: dict[str, object] = {}
        if institution_id is not None and institution_id != before.institution_id:
            _check_institution(connection, institution_id)
            if before.psam_serial is not None:
                raise EstateError(
                    f"terminal {terminal_id} holds PSAM {before.psam_serial} of institution "
                    f"{before.institution_id}: replace its PSAM (or unbind it) before the move"
                )
            values["institution_id"] = institution_id
        if group is not None or no_group:
            values["param_group"] = None if no_group else group
        if not values:
            raise EstateError(f"terminal {terminal_id} is already there")
        connection.execute(sa.update(T).where(T.c.id == terminal_id).values(**values))
        audit(connection, actor, "terminals.move", terminal_id, {
            "from": {"institution": before.institution_id, "group": before.group},
            "to": {"institution": values.get("institution_id", before.institution_id),
                   "group": values.get("param_group", before.group)},
        })
        return _get_terminal(connection, terminal_id)


def replace_psam(engine: Any, actor: str, terminal_id: str, serial: str) -> Terminal:
    """Bind PSAM ``serial`` (active, the terminal's institution's, bound to no other
    terminal) to the terminal; the PSAM it held is retired."""
    with changing(engine) as connection:
        terminal = _get_terminal(connection, terminal_id)
        new = _get_psam(connection, serial)
        if new.status != "active":
            raise EstateError(f"PSAM {serial} is {new.status}")
        if new.institution_id != terminal.institution_id:
            raise EstateError(
                f"PSAM {serial} belongs to institution {new.institution_id}, terminal "
                f"{terminal_id} to {terminal.institution_id}"
            )
        if new.terminal_id not in (None, terminal_id):
            raise EstateError(f"PSAM {serial} is bound to terminal {new.terminal_id}")
        if terminal.psam_serial == serial:
            raise EstateError(f"PSAM {serial} is already terminal {terminal_id}'s")
        if terminal.psam_serial is not None:
            connection.execute(sa.update(P).where(P.c.serial == terminal.psam_serial).values(
                status="retired", terminal_id=None
            ))
        connection.execute(sa.update(P).where(P.c.serial == serial).values(terminal_id=terminal_id))
        audit(connection, actor, "terminals.replace-psam", terminal_id,
              {"old": terminal.psam_serial, "new": serial})
        return _get_terminal(connection, terminal_id)


# -- PSAMs --------------------------------------------------------------------------------------
def _psam(row: Any) -> Psam:
    return Psam(row[0], row[1], row[2], row[3], int(row[4]), row[5])


_PSAM_COLUMNS = (P.c.serial, P.c.psam_terminal_no, P.c.institution_id, P.c.terminal_id,
                 P.c.key_version, P.c.status)


def _get_psam(connection: Any, serial: str) -> Psam:
    row = connection.execute(sa.select(*_PSAM_COLUMNS).where(P.c.serial == serial)).first()
    if row is None:
        raise NotFound(f"no PSAM {serial}")
    return _psam(row)


def list_psams(
    engine: Any, *, institution: str | None = None, status: str | None = None, limit: int = 200
) -> list[Psam]:
    query = sa.select(*_PSAM_COLUMNS).order_by(P.c.serial).limit(limit_of(limit))
    if institution:
        query = query.where(P.c.institution_id == institution)
    if status:
        query = query.where(P.c.status == status)
    with engine.connect() as connection:
        return [_psam(row) for row in connection.execute(query)]


def show_psam(engine: Any, serial: str) -> Psam:
    with engine.connect() as connection:
        return _get_psam(connection, serial)


def set_psam_status(engine: Any, actor: str, serial: str, status: str) -> Psam:
    """``disabled`` (its TACs still post — the card has paid — but it is bound to no terminal)
    or ``active`` again; a ``retired`` PSAM stays retired."""
    if status not in ("active", "disabled"):
        raise EstateError("a PSAM is enabled (active) or disabled")
    with changing(engine) as connection:
        before = _get_psam(connection, serial)
        if before.status == status:
            raise EstateError(f"PSAM {serial} is already {status}")
        if before.status == "retired":
            raise EstateError(f"PSAM {serial} is retired")
        values: dict[str, object] = {"status": status}
        if status == "disabled":
            values["terminal_id"] = None
        connection.execute(sa.update(P).where(P.c.serial == serial).values(**values))
        verb = "enable" if status == "active" else "disable"
        audit(connection, actor, f"psams.{verb}", serial,
              {"was": before.status, "terminal": before.terminal_id})
        return _get_psam(connection, serial)


def unbind_psam(engine: Any, actor: str, serial: str) -> Psam:
    with changing(engine) as connection:
        before = _get_psam(connection, serial)
        if before.terminal_id is None:
            raise EstateError(f"PSAM {serial} is bound to no terminal")
        connection.execute(sa.update(P).where(P.c.serial == serial).values(terminal_id=None))
        audit(connection, actor, "psams.unbind", serial, {"terminal": before.terminal_id})
        return _get_psam(connection, serial)

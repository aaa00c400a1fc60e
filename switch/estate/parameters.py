"""Versioned terminal parameters: offline limits and the category table, for every terminal
(scope ``all``), one institution's (``institution:ID``) or one group's (``group:NAME``, a
terminal's ``param_group``). A new version is a new row — nothing is edited — and a terminal
gets, at its next parameter download (0800, 60.3 = 360), the newest version of the narrowest
scope that has one: its group's, else its institution's, else ``all``'s; with none, the
centre's configuration ``[offline]`` and version 0 (specs/terminal-interface.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger import schema
from switch.cards import PARAMETERS_SQL
from switch.estate.common import EstateError, NotFound, audit, changing, limit_of, now_us
from switch.estate.terminals import check_group

TP = schema.terminal_parameters
DEFAULT_CATEGORIES = "employed=在职\nretired=退休"
CATEGORIES_BYTES_MAX = 255  # field 62's tag 05
_CATEGORY = re.compile(r"[0-9A-Za-z_]{1,16}=[^\n=]{1,40}")



@dataclass(frozen=True, slots=True)
class ParameterSet:
    version: int  # 0: the configuration's, no version stored
    scope: str
    floor_fen: int
    count_max: int
    age_max_h: int
    categories: str
    created_at_us: int = 0
    created_by: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version, "scope": self.scope, "floor_fen": self.floor_fen,
            "count_max": self.count_max, "age_max_h": self.age_max_h,
            "categories": self.categories, "created_at_us": self.created_at_us,
            "created_by": self.created_by,
        }


def scope_of(institution: str | None, group: str | None) -> str:
    """The scope a parameter set is filed under.

    >>> scope_of(None, None), scope_of("h1", None), scope_of(None, "night")
    ('all', 'institution:h1', 'group:night')
    """
    if institution and group:
        raise EstateError("parameters are for an institution or a group, not both")
    if group:
        return f"group:{check_group(group)}"
    return f"institution:{institution}" if institution else "all"


def check_categories(text: str) -> str:
    lines = [line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()]
    if not lines:
        raise EstateError("the category table has at least one line code=name")
    for line in lines:
        if not _CATEGORY.fullmatch(line):
            raise EstateError(f"category line {line!r} is not code=name")
    table = "\n".join(lines)
    if len(table.encode()) > CATEGORIES_BYTES_MAX:
        raise EstateError(f"the category table is over {CATEGORIES_BYTES_MAX} bytes")
    return table


def set_parameters(
    engine: Any, actor: str, scope: str, *, floor_fen: int, count_max: int, age_max_h: int,
    categories: str = DEFAULT_CATEGORIES,
) -> ParameterSet:
    """A new version for ``scope`` (terminals get it at their next download)."""
    if not 0 <= floor_fen < 2**32:
        raise EstateError("the offline floor is 0 to 4294967295 fen")
    if not 0 <= count_max < 2**16 or not 0 <= age_max_h < 2**16:
        raise EstateError("the offline count and age limits are 0 to 65535")
    table = check_categories(categories)
    with changing(engine) as connection:
        if scope.startswith("institution:"):
            institution = scope.removeprefix("institution:")
            found = connection.execute(sa.select(schema.institutions.c.id).where(
                schema.institutions.c.id == institution)).first()
            if found is None:
                raise NotFound(f"no institution {institution}")
        result = connection.execute(sa.insert(TP).values(
            scope=scope, floor_fen=floor_fen, count_max=count_max, age_max_h=age_max_h,
            categories=table, created_at_us=now_us(), created_by=actor,
        ))
        version = int(result.inserted_primary_key[0])
        audit(connection, actor, "parameters.set", scope, {
            "version": version, "floor_fen": floor_fen, "count_max": count_max,
            "age_max_h": age_max_h, "categories": table,
        })
        return _get(connection, version)


_COLUMNS = (TP.c.version, TP.c.scope, TP.c.floor_fen, TP.c.count_max, TP.c.age_max_h,
            TP.c.categories, TP.c.created_at_us, TP.c.created_by)


def _set(row: Any) -> ParameterSet:
    return ParameterSet(int(row[0]), row[1], int(row[2]), int(row[3]), int(row[4]), row[5],
                        int(row[6]), row[7])


def _get(connection: Any, version: int) -> ParameterSet:
    row = connection.execute(sa.select(*_COLUMNS).where(TP.c.version == version)).first()
    if row is None:
        raise NotFound(f"no parameter version {version}")
    return _set(row)


def list_parameters(
    engine: Any, *, scope: str | None = None, limit: int = 200
) -> list[ParameterSet]:
    query = sa.select(*_COLUMNS).order_by(TP.c.version.desc()).limit(limit_of(limit))
    if scope:
        query = query.where(TP.c.scope == scope)
    with engine.connect() as connection:
        return [_set(row) for row in connection.execute(query)]


def show_parameters(engine: Any, version: int) -> ParameterSet:
    with engine.connect() as connection:
        return _get(connection, version)


def for_terminal(engine: Any, terminal_id: str) -> ParameterSet | None:
    """What the terminal gets at its next download (None: the configuration's)."""
    with engine.connect() as connection:
        row = connection.exec_driver_sql(PARAMETERS_SQL, (terminal_id,)).first()
    if row is None:
        return None
    return ParameterSet(int(row[0]), "", int(row[1]), int(row[2]), int(row[3]), row[4])

"""What the estate's operations share: their one error, the clock, the audit entry, masking."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ledger.dayend.review_queue import audit as audit_entry
from ledger.medical.sql_store import write_transaction

#: A listing's rows at most (a command or API call never reads a whole table of cards).
LIST_MAX = 1000


class EstateError(ValueError):
    """A refused estate operation, in one line (never carrying card data in full)."""


class NotFound(EstateError):
    """No such terminal, PSAM, institution, parameter version, bill or card."""


def now_us() -> int:
    return time.time_ns() // 1000


@contextmanager
def changing(engine: Any) -> Iterator[Any]:
    """A write transaction (BEGIN IMMEDIATE on SQLite)."""
    with write_transaction(engine) as connection:
        yield connection


def audit(
    connection: Any, actor: str, action: str, subject: str, detail: Mapping[str, object]
) -> None:
    """One audit entry — who (``actor``), what (``action`` on ``subject``, ``detail``),
    when (now) — in the caller's transaction."""
    audit_entry(connection, now_us(), actor, action, subject, **detail)


def limit_of(limit: int) -> int:
    if not 0 < limit <= LIST_MAX:
        raise EstateError(f"limit is 1..{LIST_MAX}")
    return limit


def record(engine: Any, actor: str, action: str, subject: str, **detail: object) -> None:
    """One audit entry in a transaction of its own (after a change its module made)."""
    with changing(engine) as connection:
        audit(connection, actor, action, subject, detail)

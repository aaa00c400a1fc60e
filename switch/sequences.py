"""Numbers that must never repeat: retrieval reference numbers, approval codes, outbound STANs.

On PostgreSQL each is a database sequence (``medswitch_<name>``, revision 0005): unique across
every worker. On SQLite (one process) the process takes blocks of numbers from the ``counters``
table and hands them out from memory: a restart starts at the next block, never at a number
already used (the rest of a block is skipped).

Formatting for the wire wraps the number: :func:`rrn` (12 digits), :func:`approval_code` and
:func:`stan` (6 digits).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Protocol

import asyncpg  # type: ignore[import-untyped]

NAMES = ("rrn", "approval", "stan")
BLOCK = 1000


class Sequences(Protocol):
    async def next(self, name: str) -> int: ...


def rrn(number: int) -> str:
    """Twelve digits.

    >>> rrn(42)
    '000000000042'
    """
    return f"{number % 10**12:012d}"


def approval_code(number: int) -> str:
    return f"{number % 10**6:06d}"


def stan(number: int) -> str:
    """STANs run 000001..999999."""
    return f"{(number - 1) % 999_999 + 1:06d}"


class PgSequences:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def next(self, name: str) -> int:
        if name not in NAMES:
            raise ValueError(f"no sequence {name}")
        return int(await self._pool.fetchval(f"SELECT nextval('medswitch_{name}')"))


class SqliteSequences:
    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self._path = path
        self._block = block
        self._ranges: dict[str, tuple[int, int]] = {}  # name: (next, end)
        self._lock = asyncio.Lock()

    def _reserve(self, name: str) -> int:
        """Take the next block; its first number."""
        connection = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO counters (name, next_value) VALUES (?, 1) ON CONFLICT DO NOTHING",
                (name,),
            )
            (start,) = connection.execute(
                "UPDATE counters SET next_value = next_value + ? WHERE name = ?"
                " RETURNING next_value - ?",
                (self._block, name, self._block),
            ).fetchone()
            connection.execute("COMMIT")
        finally:
            connection.close()
        return int(start)

    async def next(self, name: str) -> int:
        if name not in NAMES:
            raise ValueError(f"no sequence {name}")
        async with self._lock:
            number, end = self._ranges.get(name, (0, 0))
            if number >= end:
                number = await asyncio.to_thread(self._reserve, name)
                end = number + self._block
            self._ranges[name] = (number + 1, end)
            return number

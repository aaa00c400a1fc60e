"""The key-store interface (DESIGN §2: the file and SQL stores are IO and live outside hsm/)
and an in-memory store for tests and simulators. Records are immutable per (alias, version).
"""

from __future__ import annotations

from typing import Protocol

from hsm.errors import KeyExistsError, KeyNotFoundError
from hsm.keyblock import StoredKey


class KeyStore(Protocol):
    async def get(self, alias: str, version: int) -> StoredKey:
        """The record, or KeyNotFoundError."""
        ...

    async def put(self, stored: StoredKey) -> None:
        """Add a record; KeyExistsError when (alias, version) is taken."""
        ...

    async def list(self, alias: str | None = None) -> list[StoredKey]:
        """All records (of one alias when given), ordered by alias then version."""
        ...


class MemoryKeyStore:
    def __init__(self) -> None:
        self._records: dict[tuple[str, int], StoredKey] = {}

    def __repr__(self) -> str:
        return f"MemoryKeyStore({len(self._records)} keys)"

    async def get(self, alias: str, version: int) -> StoredKey:
        try:
            return self._records[(alias, version)]
        except KeyError:
            raise KeyNotFoundError(f"no key {alias} v{version}") from None

    async def put(self, stored: StoredKey) -> None:
        key = (stored.alias, stored.version)
        if key in self._records:
            raise KeyExistsError(f"key {stored.alias} v{stored.version} already exists")
        self._records[key] = stored

    async def list(self, alias: str | None = None) -> list[StoredKey]:
        return [
            r for k, r in sorted(self._records.items()) if alias is None or k[0] == alias
        ]

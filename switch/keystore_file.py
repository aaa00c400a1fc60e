"""A file-backed key store (IO, so outside hsm/): one JSON line per wrapped key record.

Records are only ever appended (keys are immutable per alias and version). Each append is one
`write` of a whole line followed by fsync, so a crash leaves at most a torn last line, which
is skipped on reading (the next append starts on a fresh line). The file holds TR-31 blocks
under the LMK, never clear keys. Several processes may append; a miss re-reads the file so a
key another process added is found. Records are indexed by alias: listing one alias costs its
own versions, not the whole store. Terminals' working keys do not come here (they are many
and short-lived: ``switch.session_store`` keeps them in the database, bounded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hsm.errors import KeyExistsError, KeyNotFoundError, KeyTamperedError
from hsm.keyblock import StoredKey
from hsm.keys import KeyUsage


class FileKeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[tuple[str, int], StoredKey] = {}
        self._by_alias: dict[str, dict[int, StoredKey]] = {}
        self._offset = 0
        self._reload()

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.path)!r}, {len(self._records)} keys)"

    def _reload(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1  # a torn last line (no newline yet) is left for later
        for line in chunk[:end].splitlines():
            record = _decode(line)
            if record is not None:
                self._records[(record.alias, record.version)] = record
                self._by_alias.setdefault(record.alias, {})[record.version] = record
        self._offset += end

    async def get(self, alias: str, version: int) -> StoredKey:
        record = self._records.get((alias, version))
        if record is None:
            self._reload()
            record = self._records.get((alias, version))
        if record is None:
            raise KeyNotFoundError(f"no key {alias} v{version}")
        return record

    async def put(self, stored: StoredKey) -> None:
        self._reload()
        if (stored.alias, stored.version) in self._records:
            raise KeyExistsError(f"key {stored.alias} v{stored.version} already exists")
        line = json.dumps(_encode(stored), separators=(",", ":")).encode() + b"\n"
        self.path.parent.mkdir(0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a line torn by an earlier crash
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._reload()

    async def list(self, alias: str | None = None) -> list[StoredKey]:
        self._reload()
        if alias is None:
            return [r for _, r in sorted(self._records.items())]
        versions = self._by_alias.get(alias, {})
        return [versions[v] for v in sorted(versions)]


def _encode(stored: StoredKey) -> dict[str, object]:
    return {
        "alias": stored.alias,
        "version": stored.version,
        "usage": stored.usage.value,
        "kcv": stored.kcv,
        "created_at": stored.created_at,
        "block": stored.block,
    }


def _decode(line: bytes) -> StoredKey | None:
    """A record; None for a blank or torn (not JSON) line; a JSON line of the wrong shape is
    refused as tampering."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    try:
        return StoredKey(
            alias=str(raw["alias"]),
            version=int(raw["version"]),
            usage=KeyUsage(raw["usage"]),
            kcv=str(raw["kcv"]),
            created_at=str(raw["created_at"]),
            block=str(raw["block"]),
        )
    except (ValueError, KeyError, TypeError):
        raise KeyTamperedError("a key store record is malformed") from None

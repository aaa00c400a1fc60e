"""Retransmissions: a repeated request gets the original reply and posts nothing; the same
message key with different content gets 94 (DESIGN §5's message identity).

The cache is bounded in entries and age. A request that arrives while its first copy is still
being handled waits for that reply instead of running the handler twice. The ledger's
idempotent transfer ids keep money safe where this process-local cache cannot reach (another
worker, a restart): the handler then runs again, posts nothing new and answers afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Remembered:
    digest: bytes  # of the request's MAC block: what makes two requests "the same"
    reply: bytes  # the encoded reply, byte for byte
    at_s: float


class ReplyCache:
    def __init__(self, entries_max: int = 200_000, age_max_s: float = 24 * 3600.0) -> None:
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        self._pending: dict[str, tuple[bytes, asyncio.Future[bytes]]] = {}
        self._entries_max = entries_max
        self._age_max_s = age_max_s

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Remembered | None:
        found = self._entries.get(key)
        if found is not None and time.monotonic() - found.at_s > self._age_max_s:
            del self._entries[key]
            return None
        return found

    def pending(self, key: str) -> tuple[bytes, asyncio.Future[bytes]] | None:
        return self._pending.get(key)

    def begin(self, key: str, digest: bytes) -> None:
        self._pending[key] = (digest, asyncio.get_running_loop().create_future())

    def finish(self, key: str, digest: bytes, reply: bytes | None) -> None:
        """Remember ``reply`` (``None``: the handler failed; waiters get no reply)."""
        waiting = self._pending.pop(key, None)
        if waiting is not None and not waiting[1].done():
            if reply is None:
                waiting[1].cancel()
            else:
                waiting[1].set_result(reply)
        if reply is None:
            return
        self._entries[key] = Remembered(digest, reply, time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self._entries_max:
            self._entries.popitem(last=False)

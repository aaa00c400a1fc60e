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
from collections.abc import Awaitable

from messages.outcome import Outcome

Replay = tuple[str, bytes]  # (message key, digest of the request)


#: A reply kept (one per exchange): the digest of the request's MAC block (what makes two
#: requests "the same"), the encoded reply byte for byte, and when (monotonic seconds). A plain
#: tuple of bytes and a float: the garbage collector stops tracking it at its first collection
#: (a named tuple stays tracked: every later collection of its generation would traverse it,
#: for as long as the cache holds it).
Remembered = tuple[bytes, bytes, float]


class ReplyCache:
    def __init__(self, entries_max: int = 200_000, age_max_s: float = 24 * 3600.0) -> None:
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        # A request being handled: its digest, and a future once a copy waits for its reply.
        self._pending: dict[str, tuple[bytes, asyncio.Future[bytes] | None]] = {}
        self._entries_max = entries_max
        self._age_max_s = age_max_s

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Remembered | None:
        found = self._entries.get(key)
        if found is not None and time.monotonic() - found[2] > self._age_max_s:
            del self._entries[key]
            return None
        return found

    def pending(self, key: str) -> tuple[bytes, asyncio.Future[bytes]] | None:
        """The digest of the request with ``key`` being handled, and the future its reply will
        resolve (made now if nobody waited before: most requests have no copy)."""
        found = self._pending.get(key)
        if found is None:
            return None
        digest, future = found
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = (digest, future)
        return digest, future

    async def earlier(self, key: str, digest: bytes) -> bytes | Outcome | None:
        """The original reply to a retransmission (waiting for it if the first copy is still
        being handled), DUPLICATE for the same key with other content, or None for a new
        request."""
        if key not in self._entries and key not in self._pending:
            return None  # a new request, as most are: no lookup more
        remembered = self.get(key)
        if remembered is not None:
            return remembered[1] if remembered[0] == digest else Outcome.DUPLICATE
        pending = self.pending(key)
        if pending is None:
            return None
        if pending[0] != digest:
            return Outcome.DUPLICATE
        try:
            return await asyncio.shield(pending[1])
        except asyncio.CancelledError:
            return None

    async def remember(self, replay: Replay | None, reply: Awaitable[bytes]) -> bytes:
        """Await ``reply`` and remember it under ``replay``; if it fails, let the waiting copies
        go (they are then handled afresh) and re-raise."""
        try:
            encoded = await reply
        except BaseException:
            if replay is not None:
                self.finish(replay[0], replay[1], None)
            raise
        if replay is not None:
            self.finish(replay[0], replay[1], encoded)
        return encoded

    async def close(self) -> None:
        """Let what the cache is writing finish and release what it holds (here: nothing)."""

    def begin(self, key: str, digest: bytes) -> None:
        self._pending[key] = (digest, None)

    def finish(self, key: str, digest: bytes, reply: bytes | None) -> None:
        """Remember ``reply`` (``None``: the handler failed; waiters get no reply)."""
        waiting = self._pending.pop(key, (digest, None))[1]
        if waiting is not None and not waiting.done():
            if reply is None:
                waiting.cancel()
            else:
                waiting.set_result(reply)
        if reply is None:
            return
        self._entries[key] = (digest, reply, time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self._entries_max:
            self._entries.popitem(last=False)

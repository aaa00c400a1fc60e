"""The reply cache: a copy arriving while its first is handled gets the first's reply."""

from __future__ import annotations

import asyncio
import gc

import pytest

from messages.outcome import Outcome
from switch.replies import ReplyCache


def test_a_concurrent_copy_waits_for_the_first_reply() -> None:
    async def main() -> None:
        cache = ReplyCache()
        release = asyncio.Event()
        assert await cache.earlier("k", b"d") is None
        cache.begin("k", b"d")

        async def first() -> bytes:
            await release.wait()
            return b"reply"

        handling = asyncio.ensure_future(cache.remember(("k", b"d"), first()))
        copy = asyncio.ensure_future(cache.earlier("k", b"d"))
        other = await cache.earlier("k", b"other content")
        assert other is Outcome.DUPLICATE
        await asyncio.sleep(0)
        release.set()
        assert await handling == b"reply"
        assert await copy == b"reply"  # the copy got the reply; it did not run again
        assert await cache.earlier("k", b"d") == b"reply"

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_a_failed_first_lets_its_copies_be_handled_afresh() -> None:
    async def main() -> None:
        cache = ReplyCache()
        cache.begin("k", b"d")

        async def failing() -> bytes:
            await asyncio.sleep(0)
            raise RuntimeError("handler failed")

        copy = asyncio.ensure_future(cache.earlier("k", b"d"))
        with pytest.raises(RuntimeError):
            await cache.remember(("k", b"d"), failing())
        assert await copy is None
        assert cache.get("k") is None

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_bounded_in_entries() -> None:
    async def main() -> None:
        cache = ReplyCache(entries_max=3)
        for n in range(5):
            cache.begin(str(n), b"d")
            await cache.remember((str(n), b"d"), asyncio.sleep(0, result=b"r"))
        assert len(cache) == 3 and cache.get("0") is None and cache.get("4") is not None

    asyncio.run(main())


def test_a_kept_reply_leaves_the_garbage_collectors_generations() -> None:
    """The cache holds one entry per exchange for a day: after a collection the collector no
    longer tracks (nor traverses) them."""

    async def main() -> None:
        cache = ReplyCache()
        cache.begin("k", b"d")
        await cache.remember(("k", b"d"), asyncio.sleep(0, result=b"reply"))
        gc.collect()
        kept = cache.get("k")
        assert kept is not None and not gc.is_tracked(kept)

    asyncio.run(asyncio.wait_for(main(), timeout=10))

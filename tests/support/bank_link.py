"""The outbound bank link's world: the centre's and a card's numbers, a ZAK in a fresh HSM, a
bounded wait, and a coroutine run under uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

from hsm.keys import KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.soft import SoftHsm
from tests.support.bank import BANK
from tests.support.daemon import new_hsm, now

CENTRE = "09990000"
PAN = "6212340000000016"


def run(coro: Awaitable[None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(coro, timeout=60))


async def keys() -> tuple[SoftHsm, KeyRef]:
    hsm = new_hsm(MemoryKeyStore())
    return hsm, await hsm.generate_key(f"bank/{BANK}/ZAK", KeyUsage.ZAK, now=now())


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")

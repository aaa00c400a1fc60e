"""The bill expiry sweep the HIS application runs (`switch.his_api`): every few seconds the
bills whose hold is over — open ones past their expiry, approved ones a day after submission
(the rule: `ledger.medical.limits`) — are expired and their reservations released, so that an
unsettled bill stops weighing on the person's year without anybody's action."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

log = logging.getLogger("medswitch.his")


async def sweep_expired_bills(
    expire: Callable[[dt.datetime], list[str]],
    clock: Callable[[], dt.datetime],
    every_s: float,
) -> None:
    """`expire(now)` (`MedicalService.expire_bills`, in a thread) now and every `every_s`,
    until cancelled; a failure is logged in one line and the next round tries again."""
    while True:
        try:
            expired = await asyncio.to_thread(expire, clock())
        except Exception as error:  # the store is down or busy: the next round retries
            log.warning("bill expiry sweep failed: %s: %s", type(error).__name__, error)
        else:
            if expired:
                log.info("expired %d bills, their reservations released", len(expired))
        await asyncio.sleep(every_s)

"""Latency of the HSM and the ledger as the daemon sees it, by operation, without touching either:
a proxy that times every coroutine method it forwards.

>>> import asyncio
>>> from prometheus_client import CollectorRegistry, Histogram
>>> class Backend:
...     async def kcv(self) -> str:
...         return "08D7B4"
>>> seconds = Histogram("t_seconds", "t", ("operation",), registry=CollectorRegistry())
>>> asyncio.run(Timed(Backend(), seconds).kcv())
'08D7B4'
>>> seconds.labels("kcv")._sum.get() > 0
True
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram


class Timed:
    def __init__(self, target: object, seconds: Histogram) -> None:
        self._target = target
        self._seconds = seconds
        self._wrapped: dict[str, Callable[..., Any]] = {}
        self._plain: set[str] = set()  # attributes that are not coroutine functions

    def __repr__(self) -> str:
        return f"Timed({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        wrapped = self._wrapped.get(name)
        if wrapped is not None:
            return wrapped
        attribute = getattr(self._target, name)
        if name in self._plain or not inspect.iscoroutinefunction(attribute):
            self._plain.add(name)  # read afresh each time, asked about only once
            return attribute
        observe = self._seconds.labels(name).observe

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attribute(*args, **kwargs)
            finally:
                observe(time.perf_counter() - started)

        self._wrapped[name] = timed
        return timed

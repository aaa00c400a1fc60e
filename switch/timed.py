"""Latency of the HSM, the ledger and the medical core as the daemon sees it, by operation,
without touching either: a proxy that times every coroutine method it forwards (and, when
asked, every plain method).

>>> import asyncio
>>> from prometheus_client import CollectorRegistry
>>> from switch.metrics import Latencies
>>> class Backend:
...     limit = 3
...     async def kcv(self) -> str:
...         return "08D7B4"
...     def split(self, fen: int) -> int:
...         return fen // 2
>>> seconds = Latencies("t_seconds", "t", "operation", CollectorRegistry())
>>> asyncio.run(Timed(Backend(), seconds).kcv())
'08D7B4'
>>> seconds.labels("kcv").totals()[1] > 0
True
>>> timed = Timed(Backend(), seconds, calls=True)
>>> timed.split(10), timed.limit, seconds.labels("split").totals()[1] > 0
(5, 3, True)
>>> backend = Backend()
>>> timed = Timed(backend, seconds, fixed=("limit",))
>>> backend.limit = 4  # a plain attribute named fixed is read once, when wrapped
>>> timed.limit, "limit" in vars(timed)
(3, True)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from switch.latency import Latencies, Latency


class Timed:
    """Times the target's coroutine methods; with ``calls`` also its plain methods (run where
    they are called: the medical service's, in the threads its callers hand them to)."""

    def __init__(
        self,
        target: object,
        seconds: Latencies,
        *,
        calls: bool = False,
        fixed: tuple[str, ...] = (),
    ) -> None:
        self._target = target
        self._seconds = seconds
        self._calls = calls
        self._plain: set[str] = set()  # attributes that are not timed
        # Plain attributes the caller says will not change (``visit_copies``, the property
        # ``posts_with_ledger``: read per settlement and advice): read once, here, and kept as the
        # proxy's own, found without a Python call; the others are read afresh on each use.
        for name in fixed:
            setattr(self, name, getattr(target, name))

    def __repr__(self) -> str:
        return f"Timed({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name in self._plain:
            return attribute  # read afresh each time, asked about only once
        if inspect.iscoroutinefunction(attribute):
            wrapped = _timed_coroutine(attribute, self._seconds.labels(name))
        elif self._calls and inspect.ismethod(attribute):
            wrapped = _timed_call(attribute, self._seconds.labels(name))
        else:
            self._plain.add(name)
            return attribute
        # Kept as an attribute of the proxy: found from then on without calling __getattr__
        # (a Python call per use, and the hot path makes a dozen uses per exchange).
        setattr(self, name, wrapped)
        return wrapped


# The wrappers run Latency.observe's two lines themselves (a Python call less on every HSM,
# ledger and medical call: a dozen per exchange) through the deque and fold it hands out.


def _timed_coroutine(function: Callable[..., Any], latency: Latency) -> Callable[..., Any]:
    waiting, fold, fold_at = latency.observer()
    perf_counter = time.perf_counter

    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            waiting.append(perf_counter() - started)
            if len(waiting) >= fold_at:
                fold()

    return timed


def _timed_call(function: Callable[..., Any], latency: Latency) -> Callable[..., Any]:
    waiting, fold, fold_at = latency.observer()
    perf_counter = time.perf_counter

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            waiting.append(perf_counter() - started)
            if len(waiting) >= fold_at:
                fold()

    return timed

"""Latency histograms that cost little to observe: :class:`Latencies` is a Prometheus histogram
by one label, exposed exactly as prometheus-client's own, whose observations are appended to a
deque and folded into bucket counts when many wait and whenever it is read.

>>> from prometheus_client import CollectorRegistry
>>> seconds = Latencies("t_seconds", "t", "operation", CollectorRegistry(), HSM_BUCKETS_S)
>>> seconds.labels("verify_mac").observe(0.000_03)
>>> seconds.labels("verify_mac").totals()[0][:4]
[0, 0, 1, 1]
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: The HSM's operations: a soft HSM's take microseconds, a network HSM's a millisecond or more.
HSM_BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
)


class Latency:
    """One label value's latencies. ``observe`` appends to a deque — thread-safe without a lock
    in CPython — and the observations are folded into bucket counts (under a lock) when many
    wait and whenever the histogram is read, so memory stays bounded and a scrape is exact."""

    FOLD_AT = 4096  # observations waiting before the observer folds them

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)  # per bucket; the last one is +Inf
        self._sum = 0.0
        self._waiting: collections.deque[float] = collections.deque()
        self._folding = threading.Lock()

    def observe(self, seconds: float) -> None:
        self._waiting.append(seconds)
        if len(self._waiting) >= self.FOLD_AT:
            self._fold()

    def observer(self) -> tuple[collections.deque[float], Callable[[], None], int]:
        """What :meth:`observe` uses — the deque to append to, the fold to call once it holds
        the count given — for a caller that observes inline (the deque is never replaced)."""
        return self._waiting, self._fold, self.FOLD_AT

    def totals(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (``le`` each bound, then +Inf) and the sum."""
        self._fold()
        with self._folding:
            cumulative, running = [], 0
            for count in self._counts:
                running += count
                cumulative.append(running)
            return cumulative, self._sum

    def _fold(self) -> None:
        with self._folding:
            waiting, bounds, counts = self._waiting, self._bounds, self._counts
            for _ in range(len(waiting)):
                seconds = waiting.popleft()
                counts[bisect.bisect_left(bounds, seconds)] += 1
                self._sum += seconds


class Latencies:
    """A Prometheus histogram of seconds by one label, exposed as prometheus-client's own
    (``NAME_bucket``, ``NAME_sum``, ``NAME_count``) through a collector on ``registry``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        registry: CollectorRegistry,
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._buckets = tuple(buckets)
        self._children: dict[str, Latency] = {}
        self._adding = threading.Lock()
        registry.register(self)

    def labels(self, value: str) -> Latency:
        child = self._children.get(value)
        if child is None:
            with self._adding:
                child = self._children.setdefault(value, Latency(self._buckets))
        return child

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        bounds = [*(_bound(b) for b in self._buckets), "+Inf"]
        for value, child in list(self._children.items()):
            counts, total = child.totals()
            family.add_metric([value], list(zip(bounds, counts, strict=True)), total)
        yield family


def _bound(seconds: float) -> str:
    """A bucket bound as prometheus-client writes it (``0.0005``, ``1.0``)."""
    return repr(float(seconds))

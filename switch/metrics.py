"""Prometheus metrics of one daemon: a registry of its own, no module-level singletons.

The hot path counts through :meth:`Metrics.answered` and :meth:`Metrics.handled`, which keep
the labelled children they have looked up (a ``labels()`` call costs more than the count).
Latencies are :class:`Latencies`: an exchange observes six of them, and prometheus-client's
histogram takes a lock twice per observation.

>>> metrics = Metrics()
>>> metrics.answered("terminal", "0210", "00"); metrics.answered("terminal", "0210", "00")
>>> metrics.messages.labels("terminal", "0210", "00")._value.get()
2.0
>>> metrics.handled("settlement", 0.002)
>>> metrics.handler_seconds.labels("settlement").totals()
([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 0.002)
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "medswitch_messages",
            "Messages answered, by interface, MTI and response code",
            ("interface", "mti", "response_code"),
            registry=self.registry,
        )
        self.handler_seconds = Latencies(
            "medswitch_handler_seconds",
            "Time from decoded request to encoded reply, by handler",
            "handler",
            self.registry,
        )
        self.hsm_seconds = Latencies(
            "medswitch_hsm_seconds",
            "HSM operation latency, by operation",
            "operation",
            self.registry,
        )
        self.medical_seconds = Latencies(
            "medswitch_medical_seconds",
            "Medical-core operation latency: split, approval, completion (group commit included)",
            "operation",
            self.registry,
        )
        self.ledger_seconds = Latencies(
            "medswitch_ledger_seconds",
            "Ledger operation latency (group commit included)",
            "operation",
            self.registry,
        )
        self.format_errors = Counter(
            "medswitch_format_errors",
            "Frames that did not decode, by interface",
            ("interface",),
            registry=self.registry,
        )
        self.connections = Gauge(
            "medswitch_connections",
            "Open connections, by interface",
            ("interface",),
            registry=self.registry,
        )
        self.his_login_failures = Counter(
            "medswitch_his_login_failures",
            "HIS logins refused 401 for a wrong institution id or token",
            registry=self.registry,
        )
        self.his_logins_throttled = Counter(
            "medswitch_his_logins_throttled",
            "HIS requests answered 429 while their institution id or address was locked",
            registry=self.registry,
        )
        self.signed_on = Gauge(
            "medswitch_terminals_signed_on",
            "Terminals with a session in this process",
            registry=self.registry,
        )
        self.sign_ons = Counter(
            "medswitch_sign_ons",
            "Terminal sign-ons by outcome: issued (keys pending), refused (rate limit, 65),"
            " proven (a request MACed under the keys made them current), unproven (pending keys"
            " retired unused: forged sign-ons, or keys their terminal never received)",
            ("outcome",),
            registry=self.registry,
        )
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def answered(self, interface: str, mti: str, response_code: str) -> None:
        """One more message answered on ``interface`` with ``mti`` and ``response_code``."""
        key = (interface, mti, response_code)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.messages.labels(*key)
        child.inc()

    def handled(self, handler: str, seconds: float) -> None:
        """``handler`` took ``seconds`` from decoded request to encoded reply."""
        child = self._timed.get(handler)
        if child is None:
            child = self._timed[handler] = self.handler_seconds.labels(handler)
        child.observe(seconds)


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

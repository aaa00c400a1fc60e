"""Prometheus metrics of one daemon: a registry of its own, no module-level singletons.

The hot path counts through :meth:`Metrics.answered` and :meth:`Metrics.handled`, which keep
the labelled children they have looked up (a ``labels()`` call costs more than the count).

>>> metrics = Metrics()
>>> metrics.answered("terminal", "0210", "00"); metrics.answered("terminal", "0210", "00")
>>> metrics.messages.labels("terminal", "0210", "00")._value.get()
2.0
>>> metrics.handled("settlement", 0.002)
>>> metrics.handler_seconds.labels("settlement")._sum.get()
0.002
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.handler_seconds = Histogram(
            "medswitch_handler_seconds",
            "Time from decoded request to encoded reply, by handler",
            ("handler",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.hsm_seconds = Histogram(
            "medswitch_hsm_seconds",
            "HSM operation latency, by operation",
            ("operation",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.medical_seconds = Histogram(
            "medswitch_medical_seconds",
            "Medical-core operation latency: split, approval, completion (group commit included)",
            ("operation",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.ledger_seconds = Histogram(
            "medswitch_ledger_seconds",
            "Ledger operation latency (group commit included)",
            ("operation",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
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
        self.signed_on = Gauge(
            "medswitch_terminals_signed_on",
            "Terminals with a session in this process",
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

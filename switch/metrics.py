"""Prometheus metrics of one daemon: a registry of its own, no module-level singletons
(specs/metrics.md lists every series, its labels and the alert it feeds).

The hot path counts through :meth:`Metrics.answered` and :meth:`Metrics.handled`, which keep
the labelled children they have looked up (a ``labels()`` call costs more than the count).
Latencies are :class:`~switch.latency.Latencies`: an exchange observes six of them, and
prometheus-client's histogram takes a lock twice per observation.

>>> metrics = Metrics()
>>> metrics.answered("terminal", "settlement", "0210", "00")
>>> metrics.answered("terminal", "settlement", "0210", "00")
>>> metrics.messages.labels("terminal", "settlement", "0210", "00")._value.get()
2.0
>>> metrics.handled("settlement", "00", 0.002)
>>> metrics.handler_seconds.labels("settlement").totals()
([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 0.002)
>>> metrics.handled_total.labels("settlement", "00")._value.get()
1.0
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)

from switch.latency import HSM_BUCKETS_S, LATENCY_BUCKETS_S, Latencies, Latency
from switch.money_gauges import MoneyGauges

__all__ = ["LATENCY_BUCKETS_S", "Latencies", "Latency", "Metrics", "version"]


def version() -> str:
    """The installed medswitch's version ("unknown" when run from a tree not installed)."""
    try:
        return metadata.version("medswitch")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.messages = Counter(
            "medswitch_messages",
            "Messages answered, by interface, transaction type, MTI and response code",
            ("interface", "type", "mti", "response_code"),
            registry=registry,
        )
        self.handler_seconds = Latencies(
            "medswitch_handler_seconds",
            "Time from decoded request to encoded reply, by handler",
            "handler",
            registry,
        )
        self.handled_total = Counter(
            "medswitch_handled",
            "Requests answered, by the handler that answered and its response code",
            ("handler", "response_code"),
            registry=registry,
        )
        self.hsm_seconds = Latencies(
            "medswitch_hsm_seconds",
            "HSM operation latency, by operation",
            "operation",
            registry,
            HSM_BUCKETS_S,
        )
        self.medical_seconds = Latencies(
            "medswitch_medical_seconds",
            "Medical-core operation latency: split, approval, completion (group commit included)",
            "operation",
            registry,
        )
        self.ledger_seconds = Latencies(
            "medswitch_ledger_seconds",
            "Ledger operation latency (group commit included)",
            "operation",
            registry,
        )
        self.format_errors = Counter(
            "medswitch_format_errors",
            "Frames that did not decode, by interface",
            ("interface",),
            registry=registry,
        )
        self.connections = Gauge(
            "medswitch_connections",
            "Open connections, by interface",
            ("interface",),
            registry=registry,
        )
        self.his_login_failures = Counter(
            "medswitch_his_login_failures",
            "HIS logins refused 401 for a wrong institution id or token",
            registry=registry,
        )
        self.his_logins_throttled = Counter(
            "medswitch_his_logins_throttled",
            "HIS requests answered 429 while their institution id or address was locked",
            registry=registry,
        )
        self.his_requests = Counter(
            "medswitch_his_requests",
            "HIS API requests answered, by route template, HTTP status and institution"
            " (\"-\" when the request did not authenticate)",
            ("route", "status", "institution"),
            registry=registry,
        )
        self.his_request_seconds = Latencies(
            "medswitch_his_request_seconds",
            "HIS API request latency, from its head parsed to its response ready, by route",
            "route",
            registry,
        )
        self.signed_on = Gauge(
            "medswitch_terminals_signed_on",
            "Terminals with a session in this process",
            registry=registry,
        )
        self.sign_ons = Counter(
            "medswitch_sign_ons",
            "Terminal sign-ons by outcome: issued (keys pending), refused (rate limit, 65),"
            " proven (a request MACed under the keys made them current), unproven (pending keys"
            " retired unused: forged sign-ons, or keys their terminal never received)",
            ("outcome",),
            registry=registry,
        )
        self.money = MoneyGauges(registry)
        Gauge(
            "medswitch_build_info",
            "The running medswitch's version and Python (always 1)",
            ("version", "python"),
            registry=registry,
        ).labels(version(), platform.python_version()).set(1)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, memory, open fds...
        PlatformCollector(registry=registry)  # python_info
        registry.register(GC_COLLECTOR)  # python_gc_*: the collector is process-wide
        self._counted: dict[tuple[str, str, str, str], Any] = {}
        self._timed: dict[str, Any] = {}
        self._handled: dict[tuple[str, str], Any] = {}

    def answered(self, interface: str, kind: str, mti: str, response_code: str) -> None:
        """One more message of transaction type ``kind`` answered on ``interface`` with
        ``mti`` and ``response_code``."""
        key = (interface, kind, mti, response_code)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.messages.labels(*key)
        child.inc()

    def handled(self, handler: str, response_code: str, seconds: float) -> None:
        """``handler`` answered ``response_code`` in ``seconds`` from decoded request to
        encoded reply."""
        child = self._timed.get(handler)
        if child is None:
            child = self._timed[handler] = self.handler_seconds.labels(handler)
        child.observe(seconds)
        key = (handler, response_code)
        counted = self._handled.get(key)
        if counted is None:
            counted = self._handled[key] = self.handled_total.labels(*key)
        counted.inc()

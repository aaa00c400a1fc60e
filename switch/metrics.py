"""Prometheus metrics of one daemon: a registry of its own, no module-level singletons."""

from __future__ import annotations

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

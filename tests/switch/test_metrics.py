"""The latency histograms: exposed exactly as prometheus-client's own Histogram exposes the same
observations, and no observation lost when threads observe at once."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from switch.metrics import LATENCY_BUCKETS_S, Latencies

SECONDS = (0.0001, 0.0005, 0.002, 0.0025, 0.3, 7.0, 0.04)


def _series(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]  # creation stamps


def test_exposed_as_prometheus_client_exposes_a_histogram() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram(
        "t_seconds", "doc", ("operation",), buckets=LATENCY_BUCKETS_S, registry=theirs
    )
    latencies = Latencies("t_seconds", "doc", "operation", ours)
    for n, seconds in enumerate(SECONDS * 3):
        operation = ("verify_mac", "post")[n % 2]
        histogram.labels(operation).observe(seconds)
        latencies.labels(operation).observe(seconds)
    assert _series(ours) == _series(theirs)


def test_threads_observing_at_once_lose_nothing() -> None:
    latencies = Latencies("t_seconds", "doc", "operation", CollectorRegistry())
    child = latencies.labels("post")
    each = 3 * child.FOLD_AT + 17  # several folds, by whichever thread crosses the mark

    def observe() -> None:
        for _ in range(each):
            child.observe(0.001)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    counts, total = child.totals()
    assert counts[-1] == 4 * each
    assert abs(total - 4 * each * 0.001) < 1e-6

"""What the access controller counts, per line and per host, kept once: `medswitch nac status`
reads it as JSON and Prometheus as ``medswitch_nac_*`` (specs/dialup.md "Status, metrics and
logs").

Call results: ``connect``, ``busy``, ``no_answer``. Failure causes: ``host_timeout`` (no answer
in time: the line dropped), ``host_down`` (no host of the NII reachable), ``host_lost`` (the
host's connection lost with the request on it), ``routing_miss`` (no route for the destination
NII), ``bad_tpdu``, ``bad_frame`` (a framing the line cannot resynchronise, or NAKs past the
bound), ``retransmissions`` (our frame NAKed past the bound), ``hangup_mid_frame`` (the
terminal hung up inside a frame), ``idle`` (a connected line silent too long), ``fault`` (an
injected drop).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass
class LineStats:
    name: str
    state: str = "idle"  # idle | command | connected
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    connected_s: float = 0.0  # time in calls, all calls
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bad_frames: int = 0
    noise_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "calls": dict(self.calls),
            "connected_s": round(self.connected_s, 3),
            "failures": dict(self.failures),
            "frames": {"in": self.frames_in, "out": self.frames_out},
            "bytes": {"in": self.bytes_in, "out": self.bytes_out},
            "bad_frames": self.bad_frames,
            "noise_bytes": self.noise_bytes,
        }


@dataclass
class HostStats:
    host: str
    up: bool = False
    requests: int = 0
    answers: int = 0
    unmatched: int = 0  # answers for no request waiting (late, or for a call gone)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_out: int = 0
    bytes_in: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "up": self.up,
            "requests": self.requests,
            "answers": self.answers,
            "unmatched": self.unmatched,
            "failures": dict(self.failures),
            "bytes": {"in": self.bytes_in, "out": self.bytes_out},
        }


@dataclass
class NacStats:
    lines: dict[str, LineStats]
    hosts: dict[str, HostStats]
    routing_misses: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "lines": [line.as_json() for line in self.lines.values()],
            "hosts": [host.as_json() for host in self.hosts.values()],
            "routing_misses": dict(self.routing_misses),
        }


class NacCollector(Collector):
    """The stats as Prometheus metric families, read at each scrape."""

    def __init__(self, stats: NacStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        lines, hosts = self.stats.lines.values(), self.stats.hosts.values()
        prefix = "medswitch_nac_"
        calls = CounterMetricFamily(
            prefix + "calls", "Dials answered, by result.", labels=["line", "result"]
        )
        seconds = CounterMetricFamily(
            prefix + "connected_seconds", "Time in calls.", labels=["line"]
        )
        failures = CounterMetricFamily(
            prefix + "line_failures",
            "Calls ended by a failure, by cause.",
            labels=["line", "cause"],
        )
        frames = CounterMetricFamily(prefix + "frames", "Frames.", labels=["line", "direction"])
        octets = CounterMetricFamily(prefix + "line_bytes", "Bytes.", labels=["line", "direction"])
        bad = CounterMetricFamily(prefix + "bad_frames", "Damaged frames (NAKed).", labels=["line"])
        connected = GaugeMetricFamily(prefix + "line_connected", "1 in a call.", labels=["line"])
        for line in lines:
            for result, count in line.calls.items():
                calls.add_metric([line.name, result], count)
            seconds.add_metric([line.name], line.connected_s)
            for cause, count in line.failures.items():
                failures.add_metric([line.name, cause], count)
            frames.add_metric([line.name, "in"], line.frames_in)
            frames.add_metric([line.name, "out"], line.frames_out)
            octets.add_metric([line.name, "in"], line.bytes_in)
            octets.add_metric([line.name, "out"], line.bytes_out)
            bad.add_metric([line.name], line.bad_frames)
            connected.add_metric([line.name], 1 if line.state == "connected" else 0)
        up = GaugeMetricFamily(prefix + "host_up", "1: connected.", labels=["host"])
        requests = CounterMetricFamily(prefix + "host_requests", "Frames sent.", labels=["host"])
        answers = CounterMetricFamily(prefix + "host_answers", "Answers matched.", labels=["host"])
        unmatched = CounterMetricFamily(
            prefix + "host_unmatched", "Answers for no request waiting.", labels=["host"]
        )
        host_failures = CounterMetricFamily(
            prefix + "host_failures",
            "Connect failures and lost connections.",
            labels=["host", "cause"],
        )
        for host in hosts:
            up.add_metric([host.host], 1 if host.up else 0)
            requests.add_metric([host.host], host.requests)
            answers.add_metric([host.host], host.answers)
            unmatched.add_metric([host.host], host.unmatched)
            for cause, count in host.failures.items():
                host_failures.add_metric([host.host, cause], count)
        misses = CounterMetricFamily(
            prefix + "routing_misses", "Frames for an NII with no route.", labels=["nii"]
        )
        for nii, count in self.stats.routing_misses.items():
            misses.add_metric([nii], count)
        yield from (calls, seconds, failures, frames, octets, bad, connected)
        yield from (up, requests, answers, unmatched, host_failures, misses)

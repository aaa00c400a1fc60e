"""The operator's side of the HTTP port: ``/metrics`` for Prometheus and ``/status``, the
one-screen answer to "is the centre healthy and is any money at risk" as JSON (what
`medswitch status` prints; specs/metrics.md).

``/status`` answers only a request from the loopback address, or one that carries
``Authorization: Bearer <http.status_token>`` when that token is set; any other gets 403. Both
pages read the database through :class:`switch.risk.RiskWatch` (in a worker thread, at most one
read each 10 s), never on the event loop.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ledger.core import Health
from switch.bank.host import BankHost
from switch.listener import Listener
from switch.metrics import Metrics, version
from switch.risk import Risk, RiskWatch, oldest_age_s, review_ages_s
from switch.sessions import Sessions

LOOPBACK = frozenset({"127.0.0.1", "::1"})
#: When /status says "attention" (specs/metrics.md has the alerts with the same thresholds).
SAF_OLDEST_S = 300.0
IN_DOUBT_OLDEST_S = 3600.0
DAYEND_APPROVED_WITHIN_S = 11 * 3600.0  # 10:00 for a 23:00 cut-over
#: A review item is raised to be worked the same business day: one left open longer is
#: attention (a fresh one is the queue doing its job, not a fault).
REVIEW_OLDEST_S = 24 * 3600.0


@dataclass
class Observer:
    metrics: Metrics
    risk: RiskWatch
    sessions: Sessions
    terminals: Listener
    bank: BankHost
    health: Callable[[], Health]  # the ledger writer's
    status_token: str = ""
    worker: int = 0
    workers: int = 1

    def mount(self, http: web.Application) -> None:
        http.router.add_get("/metrics", self.metrics_page)
        http.router.add_get("/status", self.status_page)

    async def metrics_page(self, _: web.Request) -> web.Response:
        metrics = self.metrics
        metrics.connections.labels("terminal").set(self.terminals.connections)
        if self.bank.listener is not None:
            metrics.connections.labels("bank").set(self.bank.listener.connections)
        metrics.signed_on.set(self.sessions.signed_on)
        await self.bank.show_metrics()  # the bank links' state, their reversal queues' depth
        writer_up = self.health() is Health.OK
        try:
            risk = await self.risk.current()
        except RuntimeError:  # no read yet (the database is down): the writer's gauge only
            metrics.money.writer_up.set(1 if writer_up else 0)
        else:
            metrics.money.show(risk, writer_up=writer_up, now_us=int(time.time() * 1e6))
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_page(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            error = {"code": "forbidden", "message": "/status answers the loopback address or"
                     " a request with the status token (http.status_token)"}
            return web.json_response({"error": error}, status=403)
        try:
            risk = await self.risk.current()
        except RuntimeError as err:
            error = {"code": "database_unavailable", "message": str(err)}
            return web.json_response({"error": error}, status=503)
        await self.bank.show_metrics()  # the links' signed-on gauges /status reads, current
        return web.json_response(self.status(risk))

    def _allowed(self, request: web.Request) -> bool:
        if request.remote in LOOPBACK:
            return True
        if not self.status_token:
            return False
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.status_token.encode()
        )

    def status(self, risk: Risk) -> dict[str, Any]:
        now_us = int(time.time() * 1e6)
        links = self.status_of_links()
        saf = {
            bank: {"depth": depth, "oldest_age_s": round(max(0.0, (now_us - oldest) / 1e6), 1)}
            for bank, (depth, oldest) in sorted(risk.saf.items())
        }
        doubt = risk.in_doubt
        in_doubt = {
            "count": doubt.count,
            "fen": doubt.fen,
            "oldest_age_s": round(oldest_age_s(risk), 1),
            "capped": doubt.capped,
        }
        dayend = {
            "business_date": risk.dayend.business_date,
            "state": risk.dayend.state,
            "cutover_age_s": round(max(0.0, (now_us - risk.dayend.cutover_at_us) / 1e6), 1),
        }
        health = self.health()
        status: dict[str, Any] = {
            "version": version(),
            "worker": self.worker + 1,
            "workers": self.workers,
            "read_at_us": risk.read_at_us,
            "terminals": {
                "connections": self.terminals.connections,
                "signed_on": dict(risk.signed_on),
            },
            "bank_links": links,
            "saf": saf,
            "loads_in_doubt": in_doubt,
            "review_queue": dict(sorted(risk.review.items())),
            "review_oldest_age_s": {
                reason: round(age, 1) for reason, age in review_ages_s(risk).items()
            },
            "dayend": dayend,
            "ledger_writer": health.value,
        }
        status["attention"] = attention(status)
        return status

    def status_of_links(self) -> list[dict[str, Any]]:
        """Each bank link: outbound up, inbound connections, signed on (when known)."""
        links = []
        registry = self.metrics.registry
        for peer in self.bank.peers:
            bank = peer.bank_id
            signed_on = {
                side: registry.get_sample_value(
                    "medswitch_bank_signed_on", {"bank": bank, "connection": side}
                )
                for side in ("outbound", "inbound")
            }
            links.append(
                {
                    "bank": bank,
                    "outbound_up": peer.outbound is not None and peer.outbound.up,
                    "inbound_connections": (
                        0 if peer.listener is None else peer.listener.connections
                    ),
                    "signed_on": {
                        side: None if value is None else bool(value)
                        for side, value in signed_on.items()
                    },
                }
            )
        return links


def attention(status: dict[str, Any]) -> list[str]:
    """One line for each thing an operator should look at now; none: all is well."""
    lines = []
    if status["ledger_writer"] != Health.OK.value:
        lines.append(f"ledger writer {status['ledger_writer']}")
    for link in status["bank_links"]:
        if not link["outbound_up"]:
            lines.append(f"bank {link['bank']}: outbound link down")
    for bank, queue in status["saf"].items():
        if queue["depth"] and queue["oldest_age_s"] > SAF_OLDEST_S:
            lines.append(
                f"bank {bank}: {queue['depth']} reversals waiting, oldest"
                f" {queue['oldest_age_s']:.0f} s"
            )
    doubt = status["loads_in_doubt"]
    if doubt["count"] and doubt["oldest_age_s"] > IN_DOUBT_OLDEST_S:
        lines.append(
            f"{doubt['count']} loads in doubt ({doubt['fen'] / 100:.2f} yuan), oldest"
            f" {doubt['oldest_age_s']:.0f} s"
        )
    old = {
        reason: age
        for reason, age in status["review_oldest_age_s"].items()
        if age > REVIEW_OLDEST_S
    }
    if old:
        reasons = ", ".join(f"{reason} {age / 3600:.0f} h" for reason, age in old.items())
        lines.append(f"review items open longer than 24 h: {reasons}")
    dayend = status["dayend"]
    if dayend["state"] != "approved" and dayend["cutover_age_s"] > DAYEND_APPROVED_WITHIN_S:
        lines.append(f"day-end of {dayend['business_date']} {dayend['state']}, not approved")
    return lines

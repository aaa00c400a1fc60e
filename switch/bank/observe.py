"""What the bank links show: their metrics (names fixed in specs/metrics.md) and a log line for
each outbound request, response, timeout, reversal, acknowledgement and link failure (bank,
STAN, code; card numbers masked).

- :class:`BankMetrics` — the counters, and the gauges a scrape refreshes from the links' state
  (:meth:`BankMetrics.show`): link up and signed on per bank and connection, the store-and-
  forward queue's depth and its oldest item's age.
- :class:`LinkEvents` — one bank's outbound link reports through it (``switch.bank.link``);
  :class:`SafEvents` — its store-and-forward sender (``switch.bank.saf``).
- :func:`ready` — the readiness rule ``[bank] ready_when`` over the banks' outbound links.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from messages.bank import (
    BankEcho,
    BankMessage,
    BankReply,
    BankReversal,
    BankSignOff,
    BankSignOn,
    KeyChange,
    SavingsDebit,
)
from messages.pretty import mask_pan

log = logging.getLogger("medswitch.bank.out")

Connection = Literal["outbound", "inbound"]
ReversalOutcome = Literal["acknowledged", "retried", "review"]
READY_RULES = ("any", "all", "ignore")

_TYPES: dict[type[BankMessage], str] = {
    SavingsDebit: "debit",
    BankReversal: "reversal",
    BankSignOn: "sign_on",
    BankSignOff: "sign_off",
    BankEcho: "echo",
    KeyChange: "key_change",
}


def request_type(typed: BankMessage) -> str:
    """The request's type as the metrics label it (debit, reversal, sign_on, echo, …)."""
    return _TYPES.get(type(typed), type(typed).__name__.lower())


def masked_pan(typed: BankMessage) -> str:
    pan = typed.pan if isinstance(typed, SavingsDebit | BankReversal | BankReply) else None
    return mask_pan(pan) if pan else "-"


class BankMetrics:
    """The bank links' metrics on the daemon's registry (one per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.link_up = Gauge(
            "medswitch_bank_link_up",
            "1 when a bank link has a connection, by bank and connection (outbound, inbound)",
            ("bank", "connection"),
            registry=registry,
        )
        self.signed_on = Gauge(
            "medswitch_bank_signed_on",
            "1 when a bank link is signed on, by bank and connection (outbound, inbound)",
            ("bank", "connection"),
            registry=registry,
        )
        self.saf_depth = Gauge(
            "medswitch_saf_depth",
            "Reversals waiting in the store-and-forward queue, by bank",
            ("bank",),
            registry=registry,
        )
        self.saf_oldest_age = Gauge(
            "medswitch_saf_oldest_age_seconds",
            "Age of the oldest reversal waiting in the store-and-forward queue (0 when empty)",
            ("bank",),
            registry=registry,
        )
        self.saf_review = Counter(
            "medswitch_saf_review",
            "Reversals given up after their attempt or age limit and sent to review, by bank",
            ("bank",),
            registry=registry,
        )
        self.dropped = Counter(
            "medswitch_bank_responses_dropped",
            "Bank responses dropped, by bank and reason"
            " (missing_mac, bad_mac, unmatched, late, unreadable)",
            ("bank", "reason"),
            registry=registry,
        )
        self.reversals = Counter(
            "medswitch_bank_reversals",
            "Reversal attempts by outcome: acknowledged, retried (answered otherwise or not at"
            " all: sent again later), review (given up)",
            ("bank", "outcome"),
            registry=registry,
        )
        self.requests = Counter(
            "medswitch_bank_requests",
            "Outbound requests answered, by bank, request type and response code",
            ("bank", "type", "response_code"),
            registry=registry,
        )

    def count_drop(self, bank: str, reason: str) -> None:
        """A response from ``bank`` dropped (``switch.bank.link`` logs it)."""
        self.dropped.labels(bank, reason).inc()

    def show(self, bank: str, state: LinkState) -> None:
        """Set a bank's gauges from its links' state (before each scrape)."""
        for connection, up, signed_on in (
            ("outbound", state.outbound_up, state.outbound_signed_on),
            ("inbound", state.inbound_up, state.inbound_signed_on),
        ):
            if up is not None:
                self.link_up.labels(bank, connection).set(int(up))
            if signed_on is not None:
                self.signed_on.labels(bank, connection).set(int(signed_on))
        if state.saf_depth is not None:
            self.saf_depth.labels(bank).set(state.saf_depth)
            self.saf_oldest_age.labels(bank).set(state.saf_oldest_age_s)


@dataclass(frozen=True, slots=True)
class LinkState:
    """One bank's links as a scrape sees them; None: that side is not configured."""

    outbound_up: bool | None
    outbound_signed_on: bool | None
    inbound_up: bool | None
    inbound_signed_on: bool | None
    saf_depth: int | None = None
    saf_oldest_age_s: float = 0.0


class LinkEvents:
    """One bank's outbound link reports here: a log line each, and metrics when given."""

    def __init__(self, bank: str, metrics: BankMetrics | None = None) -> None:
        self.bank = bank
        self.metrics = metrics

    def sent(self, typed: BankMessage, mti: str) -> None:
        log.info(
            "bank %s: sent %s %s stan=%s pan=%s",
            self.bank,
            mti,
            request_type(typed),
            typed.stan,
            masked_pan(typed),
        )

    def answered(self, typed: BankMessage, reply: BankReply) -> None:
        kind = request_type(typed)
        log.info(
            "bank %s: response %s %s stan=%s code=%s pan=%s",
            self.bank,
            reply.mti,
            kind,
            reply.stan,
            reply.response_code,
            masked_pan(typed),
        )
        if self.metrics is not None:
            self.metrics.requests.labels(self.bank, kind, reply.response_code).inc()

    def timed_out(self, typed: BankMessage) -> None:
        log.warning(
            "bank %s: %s stan=%s timed out unanswered", self.bank, request_type(typed), typed.stan
        )

    def link_failed(self, host: str, port: int, error: BaseException) -> None:
        reason = str(error) or type(error).__name__
        log.warning("bank %s: link to %s:%d failed: %s", self.bank, host, port, reason)

    def signed_on(self, host: str, port: int) -> None:
        log.info("bank %s: link to %s:%d signed on", self.bank, host, port)


class SafEvents:
    """One bank's store-and-forward sender reports here: a log line each, and metrics."""

    def __init__(self, bank: str, metrics: BankMetrics | None = None) -> None:
        self.bank = bank
        self.metrics = metrics

    def acknowledged(self, key: str, stan: str, code: str, attempts: int) -> None:
        log.info(
            "bank %s: reversal %s stan=%s acknowledged code=%s after %d attempts",
            self.bank,
            key,
            stan,
            code,
            attempts,
        )
        self._count("acknowledged")

    def retried(self, key: str, stan: str, code: str, attempts: int, delay_s: float) -> None:
        log.warning(
            "bank %s: reversal %s stan=%s not acknowledged (%s), attempt %d; again in %.1f s",
            self.bank,
            key,
            stan,
            code,
            attempts,
            delay_s,
        )
        self._count("retried")

    def review(self, key: str, why: str) -> None:
        log.error("bank %s: reversal %s given up to review: %s", self.bank, key, why)
        self._count("review")
        if self.metrics is not None:
            self.metrics.saf_review.labels(self.bank).inc()

    def failed_send(self, key: str, error: BaseException | None) -> None:
        log.error("bank %s: reversal %s: sending failed: %r", self.bank, key, error)

    def failed_round(self) -> None:
        log.exception(
            "bank %s: store-and-forward round failed; the next one tries again", self.bank
        )

    def _count(self, outcome: ReversalOutcome) -> None:
        if self.metrics is not None:
            self.metrics.reversals.labels(self.bank, outcome).inc()


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    down: tuple[str, ...]  # the banks whose outbound link is not signed on


def ready(rule: str, links: Sequence[tuple[str, bool]]) -> Readiness:
    """The readiness rule over the banks' outbound links, each (bank, signed on): ``any`` — ready
    when one is signed on, ``all`` — when every one is, ``ignore`` — whatever their state. With
    no outbound link configured the rule has nothing to wait for: ready.

    >>> ready("any", [("01020000", False), ("01030000", True)])
    Readiness(ready=True, down=('01020000',))
    >>> ready("all", [("01020000", False), ("01030000", True)]).ready
    False
    >>> ready("any", []).ready
    True
    """
    down = tuple(bank for bank, up in links if not up)
    if rule == "ignore" or not links:
        return Readiness(True, down)
    if rule == "all":
        return Readiness(not down, down)
    return Readiness(len(down) < len(links), down)

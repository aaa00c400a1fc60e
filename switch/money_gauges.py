"""The gauges of money at risk and of the ledger's writer, set from a :class:`switch.risk.Risk`
just before a scrape is written (`switch.observe_http`), so they cost nothing between scrapes.

>>> from prometheus_client import CollectorRegistry
>>> from switch.risk import DayEnd, InDoubt, Risk
>>> gauges = MoneyGauges(CollectorRegistry())
>>> risk = Risk(10_000_000, InDoubt(2, 500, 4_000_000), {"bank_unmatched": 1},
...             DayEnd("2026-01-01", "prepared", 0), {})
>>> gauges.show(risk, writer_up=True)
>>> gauges.loads_in_doubt_oldest._value.get(), gauges.dayend_state.labels("prepared")._value.get()
(6.0, 1.0)
>>> gauges.show(Risk(10_000_000, InDoubt(), {},
...             DayEnd("2026-01-01", "approved", 0), {}), writer_up=False)
>>> gauges.review_items.labels("bank_unmatched")._value.get(), gauges.writer_up._value.get()
(0.0, 0.0)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from ledger.dayend.recon_doubt import REASON as LOAD_IN_DOUBT_AGED
from ledger.events.common import ReviewReason
from switch.risk import DAYEND_STATES, Risk, oldest_age_s, reasons, review_ages_s

#: Reasons shown at 0 when no item has them, so that an alert sees 0 rather than nothing.
KNOWN_REASONS = (*(reason.value for reason in ReviewReason), LOAD_IN_DOUBT_AGED)


class MoneyGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.loads_in_doubt = Gauge(
            "medswitch_loads_in_doubt",
            "Loads and unloads whose MAC2 was released and that are not yet proven either way",
            registry=registry,
        )
        self.loads_in_doubt_fen = Gauge(
            "medswitch_loads_in_doubt_fen",
            "Their amount in fen",
            registry=registry,
        )
        self.loads_in_doubt_oldest = Gauge(
            "medswitch_loads_in_doubt_oldest_age_seconds",
            "Seconds since the oldest of them went into doubt (0 when none is)",
            registry=registry,
        )
        self.review_items = Gauge(
            "medswitch_review_items",
            "Review items a person still has to act on (open or adjusting), by reason",
            ("reason",),
            registry=registry,
        )
        self.review_oldest = Gauge(
            "medswitch_review_oldest_age_seconds",
            "Seconds the oldest review item still open (or adjusting) has waited, by reason"
            " (0 when none is)",
            ("reason",),
            registry=registry,
        )
        self.dayend_state = Gauge(
            "medswitch_dayend_state",
            "1 for the day-end state (pending, prepared, approved, rejected) of the last"
            " business date whose cut-over has passed, 0 for the others",
            ("state",),
            registry=registry,
        )
        self.dayend_cutover_age = Gauge(
            "medswitch_dayend_cutover_age_seconds",
            "Seconds since the cut-over of that business date",
            registry=registry,
        )
        self.writer_up = Gauge(
            "medswitch_ledger_writer_up",
            "1 while the ledger's writer is running, 0 when it ended (restarting or closed)",
            registry=registry,
        )
        self.risk_read_age = Gauge(
            "medswitch_risk_read_age_seconds",
            "Age of the database read behind the gauges above (it is redone when 10 s old;"
            " older means the database did not answer in time)",
            registry=registry,
        )
        self._reasons: set[str] = set(KNOWN_REASONS)  # every reason shown so far

    def show(self, risk: Risk, *, writer_up: bool, now_us: int | None = None) -> None:
        doubt = risk.in_doubt
        self.loads_in_doubt.set(doubt.count)
        self.loads_in_doubt_fen.set(doubt.fen)
        self.loads_in_doubt_oldest.set(oldest_age_s(risk))
        counts = reasons(KNOWN_REASONS, risk)
        for reason in self._reasons - counts.keys():  # none open now
            counts[reason] = 0
        ages = review_ages_s(risk)
        for reason, count in counts.items():
            self.review_items.labels(reason).set(count)
            self.review_oldest.labels(reason).set(ages.get(reason, 0.0) if count else 0.0)
        self._reasons |= counts.keys()
        for state in DAYEND_STATES:
            self.dayend_state.labels(state).set(1 if risk.dayend.state == state else 0)
        at = risk.read_at_us if now_us is None else now_us
        self.dayend_cutover_age.set(max(0.0, (at - risk.dayend.cutover_at_us) / 1e6))
        self.writer_up.set(1 if writer_up else 0)
        self.risk_read_age.set(max(0.0, (at - risk.read_at_us) / 1e6))

"""The HIS API's request rate per institution (specs/his-api.yaml, "Rate limits"): a token
bucket for each authenticated institution id — `burst` requests at once, refilled at
`per_s` a second. A request over it is answered 429 ``rate_limited`` with ``Retry-After``
(whole seconds until a token is back) and does nothing. Counted after the credentials are
checked (failed logins have their own throttle, `switch.his_throttle`). One bucket per serving
process; memory is bounded by `keys_max` institutions, the least recently seen forgotten.

>>> now = [0.0]
>>> rate = RateLimiter(RateSettings(per_s=1.0, burst=2), clock=lambda: now[0])
>>> [rate.wait_s("H001") for _ in range(3)]
[0.0, 0.0, 1.0]
>>> rate.wait_s("H002"), now.__setitem__(0, 1.0), rate.wait_s("H001")
(0.0, None, 0.0)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class RateSettings:
    per_s: float = 50.0  # requests a second, sustained, per institution; 0: no limit
    burst: int = 100  # requests at once
    keys_max: int = 10_000

    def __post_init__(self) -> None:
        if self.per_s < 0 or self.burst < 1 or self.keys_max < 1:
            raise ValueError("rate_per_s >= 0, rate_burst >= 1")


class _Bucket(NamedTuple):
    tokens: float
    at_s: float


class RateLimiter:
    """Used on the event loop only (no lock)."""

    def __init__(
        self, settings: RateSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or RateSettings()
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def wait_s(self, institution_id: str) -> float:
        """0 and a token taken when the institution may go on now; else the seconds until it
        may (nothing taken)."""
        settings = self.settings
        if settings.per_s == 0:
            return 0.0
        now_s = self._clock()
        bucket = self._buckets.pop(institution_id, _Bucket(float(settings.burst), now_s))
        tokens = min(float(settings.burst), bucket.tokens + (now_s - bucket.at_s) * settings.per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / settings.per_s
        self._buckets[institution_id] = _Bucket(tokens, now_s)
        if len(self._buckets) > settings.keys_max:
            self._buckets.popitem(last=False)
        return wait_s

"""Login throttling for the HIS interface: failed authentications counted per credential id
(the institution id of HTTP Basic) and per client address; past a number of failures each
further failure locks the id or the address for a delay that doubles, up to a cap. While
locked, a request is answered 429 ``too_many_attempts`` with ``Retry-After`` and its
credentials are not checked at all — not even a right token — so a guesser learns nothing and
costs nothing (no hash, no thread). An id or address with recent failures has one check in
flight at a time (the others meanwhile 429 for `delay_s`), so a concurrent flood cannot slip
many guesses past the count before the first failures are recorded.

An address from which the institution has logged in successfully (remembered for
`known_for_s`) is not held by the id's lock, only by its own: a stranger failing an
institution's id cannot lock the institution's own charging system out. A quiet period of
`window_s` with no failure forgets an id's or an address's failures. Memory is bounded: at most
`keys_max` ids, addresses and known pairs each, the least recently failed forgotten first.

>>> now = [0.0]
>>> throttle = LoginThrottle(ThrottleSettings(id_failures_max=2), clock=lambda: now[0])
>>> for _ in range(3):
...     throttle.failed("H001", "10.0.0.9")
>>> throttle.retry_after_s("H001", "10.0.0.9"), throttle.retry_after_s("H001", "10.0.0.7")
(2.0, 2.0)
>>> now[0] = 2.5
>>> throttle.retry_after_s("H001", "10.0.0.7")
0.0
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    id_failures_max: int = 5  # failures of one institution id before it is locked
    address_failures_max: int = 20  # failures from one client address before it is locked
    window_s: float = 300.0  # this long without a failure forgets the failures
    delay_s: float = 1.0  # the first lock; each further failure doubles it
    delay_max_s: float = 300.0
    known_for_s: float = 86_400.0  # an address that logged in is known to its id this long
    keys_max: int = 10_000  # ids, addresses and known pairs tracked, each

    def __post_init__(self) -> None:
        if min(self.id_failures_max, self.address_failures_max, self.keys_max) < 1:
            raise ValueError("failure counts and keys_max are at least 1")
        if min(self.window_s, self.delay_s, self.delay_max_s, self.known_for_s) <= 0:
            raise ValueError("throttle times are positive")


class _Failures(NamedTuple):
    failures: int
    last_s: float  # the latest failure
    locked_until_s: float


class _Counter:
    """Failures by key, least recently failed first, bounded."""

    def __init__(self, failures_max: int, settings: ThrottleSettings) -> None:
        self._failures_max = failures_max
        self._settings = settings
        self._by_key: OrderedDict[str, _Failures] = OrderedDict()
        self._checking: dict[str, int] = {}  # checks in flight by key (none kept at zero)

    def retry_after_s(self, key: str, now_s: float) -> float:
        found = self._by_key.get(key)
        if found is None:
            return 0.0
        if found.locked_until_s > now_s:
            return found.locked_until_s - now_s
        if now_s - found.last_s > self._settings.window_s:
            return 0.0  # forgotten
        return self._settings.delay_s if self._checking.get(key) else 0.0  # one at a time

    @contextmanager
    def checking(self, key: str) -> Iterator[None]:
        self._checking[key] = self._checking.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._checking.pop(key) - 1
            if left:
                self._checking[key] = left

    def failed(self, key: str, now_s: float) -> None:
        settings = self._settings
        found = self._by_key.pop(key, None)
        quiet = found is not None and now_s - found.last_s > settings.window_s
        if found is None or (quiet and found.locked_until_s <= now_s):
            found = _Failures(0, now_s, 0.0)
        count = found.failures + 1
        locked_until_s = found.locked_until_s
        if count >= self._failures_max:
            doublings = min(count - self._failures_max, 32)
            delay_s = min(settings.delay_s * 2**doublings, settings.delay_max_s)
            locked_until_s = max(locked_until_s, now_s + delay_s)
        self._by_key[key] = _Failures(count, now_s, locked_until_s)
        if len(self._by_key) > settings.keys_max:
            self._by_key.popitem(last=False)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


class LoginThrottle:
    """Used on the event loop only (no lock): `retry_after_s` before checking credentials,
    then `failed` or `succeeded`."""

    def __init__(
        self,
        settings: ThrottleSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings = settings or ThrottleSettings()
        self._clock = clock
        self._ids = _Counter(settings.id_failures_max, settings)
        self._addresses = _Counter(settings.address_failures_max, settings)
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # → until

    def _is_known(self, institution_id: str, address: str, now_s: float) -> bool:
        return self._known.get((institution_id, address), 0.0) > now_s

    def retry_after_s(self, institution_id: str, address: str) -> float:
        """Seconds before a login of `institution_id` from `address` is checked again; 0: now."""
        now_s = self._clock()
        wait_s = self._addresses.retry_after_s(address, now_s)
        if not self._is_known(institution_id, address, now_s):
            wait_s = max(wait_s, self._ids.retry_after_s(institution_id, now_s))
        return wait_s

    @contextmanager
    def checking(self, institution_id: str, address: str) -> Iterator[None]:
        """Around the check of credentials that `retry_after_s` let through."""
        with self._ids.checking(institution_id), self._addresses.checking(address):
            yield

    def failed(self, institution_id: str, address: str) -> None:
        now_s = self._clock()
        self._addresses.failed(address, now_s)
        if not self._is_known(institution_id, address, now_s):
            self._ids.failed(institution_id, now_s)

    def succeeded(self, institution_id: str, address: str) -> None:
        """A right token: the id's failures are forgotten and the address is known to it."""
        self._ids.forget(institution_id)
        pair = (institution_id, address)
        self._known.pop(pair, None)
        self._known[pair] = self._clock() + self.settings.known_for_s
        if len(self._known) > self.settings.keys_max:
            self._known.popitem(last=False)

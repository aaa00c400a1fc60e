"""Warnings a peer can provoke at will (malformed frames, bad length headers), rate-limited:
one line per provocation would let a flood write the disk full (issue 22: 110 MB of log from one
connection). What is held back is counted, said in the next interval's first line, and counted
in the metrics by the caller (`medswitch_format_errors_total`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

WARNINGS_PER_INTERVAL = 10
WARNING_INTERVAL_S = 10.0


class RateLimitedWarnings:
    """At most ``per_interval`` warning lines on ``log`` per ``interval_s``.

    >>> times = iter([0.0, 0.1, 0.2, 20.0])
    >>> limited = RateLimitedWarnings(logging.getLogger("doctest"), lambda: next(times), 2)
    >>> [limited.warning("bad frame") for _ in range(4)]
    [True, True, False, True]
    """

    def __init__(
        self,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        per_interval: int = WARNINGS_PER_INTERVAL,
        interval_s: float = WARNING_INTERVAL_S,
    ) -> None:
        assert per_interval > 0 and interval_s > 0
        self._log, self._clock = log, clock
        self._per_interval, self._interval_s = per_interval, interval_s
        self._until = 0.0
        self._lines = 0
        self._held = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log the line unless this interval's are used up; whether it was logged."""
        now = self._clock()
        if now >= self._until:
            if self._held:
                self._log.warning(
                    "%d similar warnings held back in %.0f s", self._held, self._interval_s
                )
            self._until, self._lines, self._held = now + self._interval_s, 0, 0
        if self._lines >= self._per_interval:
            self._held += 1
            return False
        self._lines += 1
        self._log.warning(message, *args)
        return True

"""How commands print for people: times as dates and clock times, never raw microseconds;
amounts in yuan (`ledger.medical.split.yuan`; a machine format that needs fen says so)."""

from __future__ import annotations

import datetime as dt


def human_time(at_us: int | None) -> str:
    """Microseconds since the epoch (as the ledger stores time) as UTC to the second.

    >>> human_time(1_764_151_200_042_500), human_time(None)
    ('2025-11-26 10:00:00Z', '-')
    """
    if at_us is None:
        return "-"
    return dt.datetime.fromtimestamp(at_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")

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


def human_duration(seconds: float) -> str:
    """A duration in its two largest units.

    >>> human_duration(42), human_duration(3_725), human_duration(90_000), human_duration(86_400)
    ('42 s', '1 h 2 min', '1 d 1 h', '1 d')
    """
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    units = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
    parts: list[tuple[int, str]] = []
    for name, size in units:
        count, whole = divmod(whole, size)
        if count or parts:
            parts.append((count, name))
        if len(parts) == 2:
            break
    return " ".join(f"{count} {name}" for count, name in parts if count)

"""Business dates and their cut-over (pure). A business date D is the half-open window of
instants ``[cut-over of D-1, cut-over of D)``; a transfer belongs to the date of its posted time
(so an offline record uploaded days late belongs to its upload's date; its card date stays in
``offline_records``). The cut-over is a time of day in the centre's time zone: from 12:00 on it
closes D on D itself (23:00 → D 23:00), before 12:00 it closes D the next morning (02:00 →
D+1 02:00), and 00:00 closes D at midnight.

>>> c = Cutover.parse("23:00", "Asia/Shanghai")
>>> day = dt.date(2026, 11, 25)
>>> c.window(day) == (c.instant_us(day - dt.timedelta(days=1)), c.instant_us(day))
True
>>> dt.datetime.fromtimestamp(c.instant_us(dt.date(2026, 11, 25)) / 1e6, dt.UTC).isoformat()
'2026-11-25T15:00:00+00:00'
>>> c.date_of(c.instant_us(dt.date(2026, 11, 25)))  # the cut-over instant opens the next date
datetime.date(2026, 11, 26)
>>> Cutover.parse("00:00", "UTC").window(dt.date(2026, 1, 1))[1] == 1767312000 * 10**6
True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NOON = dt.time(12, 0)


class CalendarError(ValueError):
    """A cut-over time, time zone or date that cannot be used."""


def parse_date(text: str) -> dt.date:
    """A business date given as yyyy-mm-dd (or yyyymmdd)."""
    try:
        if len(text) == 8 and text.isdigit():
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CalendarError(f"{text!r} is not a date (yyyy-mm-dd)") from None


@dataclass(frozen=True, slots=True)
class Cutover:
    time: dt.time
    zone: ZoneInfo

    @classmethod
    def parse(cls, time_text: str, zone_name: str) -> Cutover:
        try:
            hours, minutes = (int(part) for part in time_text.split(":"))
            time = dt.time(hours, minutes)
        except ValueError:
            raise CalendarError(f"cut-over {time_text!r} is not HH:MM") from None
        try:
            return cls(time, ZoneInfo(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise CalendarError(f"unknown time zone {zone_name!r}") from None

    def instant(self, date: dt.date) -> dt.datetime:
        """The instant (aware) that closes business date `date`."""
        day = date if self.time >= NOON else date + dt.timedelta(days=1)
        return dt.datetime.combine(day, self.time, tzinfo=self.zone)

    def instant_us(self, date: dt.date) -> int:
        """The cut-over instant of `date` in µs since the epoch (UTC), as transfers store time."""
        return _us(self.instant(date))

    def window(self, date: dt.date) -> tuple[int, int]:
        """[start, end) of `date` in µs: transfers with start <= posted_at_us < end."""
        return self.instant_us(date - dt.timedelta(days=1)), self.instant_us(date)

    def date_of(self, instant_us: int) -> dt.date:
        """The business date an instant belongs to."""
        local = dt.datetime.fromtimestamp(instant_us / 1_000_000, self.zone)
        date = local.date() if self.time >= NOON else local.date() - dt.timedelta(days=1)
        while instant_us >= self.instant_us(date):
            date += dt.timedelta(days=1)
        while instant_us < self.instant_us(date - dt.timedelta(days=1)):
            date -= dt.timedelta(days=1)
        return date


def _us(moment: dt.datetime) -> int:
    delta = moment.astimezone(dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

"""Business dates and cut-overs; the day-end modules' doctests."""

from __future__ import annotations

import datetime as dt
import doctest
import importlib

import pytest

from ledger.dayend.calendar import CalendarError, Cutover, parse_date

DAY = dt.date(2026, 11, 25)


def _utc(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("time", "zone", "start", "end"),
    [
        ("23:00", "Asia/Shanghai", "2026-11-24 15:00", "2026-11-25 15:00"),
        ("00:00", "Asia/Shanghai", "2026-11-24 16:00", "2026-11-25 16:00"),
        ("02:30", "Asia/Shanghai", "2026-11-24 18:30", "2026-11-25 18:30"),  # next morning
        ("12:00", "UTC", "2026-11-24 12:00", "2026-11-25 12:00"),
    ],
)
def test_window_of_a_date(time: str, zone: str, start: str, end: str) -> None:
    cutover = Cutover.parse(time, zone)
    first, last = cutover.window(DAY)
    assert (_utc(first), _utc(last)) == (start, end)
    assert cutover.date_of(first) == DAY and cutover.date_of(last - 1) == DAY
    assert cutover.date_of(last) == DAY + dt.timedelta(days=1)


def test_every_instant_belongs_to_exactly_one_date() -> None:
    cutover = Cutover.parse("23:00", "Asia/Shanghai")
    first, last = cutover.window(DAY)
    for offset_s in range(-3 * 86_400, 3 * 86_400, 3_541):
        instant = first + offset_s * 1_000_000
        date = cutover.date_of(instant)
        start, end = cutover.window(date)
        assert start <= instant < end
        assert (date == DAY) is (first <= instant < last)


@pytest.mark.parametrize(
    ("time", "zone", "message"),
    [("25:00", "UTC", "HH:MM"), ("2300", "UTC", "HH:MM"), ("23:00", "Mars/Base", "time zone")],
)
def test_bad_settings_are_refused(time: str, zone: str, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        Cutover.parse(time, zone)


def test_dates() -> None:
    assert parse_date("20261125") == parse_date("2026-11-25") == DAY
    with pytest.raises(CalendarError, match="not a date"):
        parse_date("2026-13-01")


@pytest.mark.parametrize("name", ["calendar", "clearing", "payout_file", "plan"])
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"ledger.dayend.{name}")
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0 and tried > 0

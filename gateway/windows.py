"""Reporting windows (spec 8): working and trading days, the midday hold of daily tables, monthly deadlines.

Pure: no I/O, no logging, no clock of its own. Every function takes the moment it reasons about, so the
daemon passes its injectable clock's ``now()`` and tests pass real dates.

The rules are the platform's and are written in Beijing time, whatever ``timezone`` the deployment
configures for its file ids and history days: every moment is converted to ``Asia/Shanghai`` first and
every moment returned is ``Asia/Shanghai``-aware.

Working days come from the State Council schedule as published in the ``chinesecalendar`` package (import
name ``chinese_calendar``), make-up weekend days (调休上班) included, with the deployment's ``holidays`` /
``workdays`` overriding it. The package covers a fixed range of years and raises ``NotImplementedError``
outside it (a new release follows each year's schedule, usually around November). For a year it does
not cover, a day is a working day when it is Monday to Friday, config overrides still applied:
``Calendar.covers`` tells the caller so, and the daemon should warn operators to upgrade the package or
list that year's holidays and make-up days in its config.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar  # type: ignore[import-untyped]

from codes.tables import Frequency, TableSpec

PLATFORM_ZONE = ZoneInfo("Asia/Shanghai")
"""The zone the platform's windows and deadlines are written in (Beijing time, no DST)."""

WINDOW_START = time(11, 30)
"""Production forwarding of daily tables is held from here (inclusive) ..."""
WINDOW_END = time(15, 0)
"""... to here (exclusive) on trading days; held files are forwarded at this time."""

MONTHLY_DUE_WORKING_DAY = 7
"""Monthly tables are due on this working day of the month after the data date ..."""
MONTHLY_DUE_TIME = time(11, 30)
"""... by this time: a file received later than that is LATE (accepted and flagged, never blocked)."""

_SATURDAY = 5


@functools.lru_cache(maxsize=4096)
def _state_council(day: date) -> bool | None:
    """The published schedule's word on ``day`` (make-up days included), or None for a year it lacks."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


class Calendar:
    """Working and trading days: the State Council schedule, then the deployment's overrides.

    ``holidays`` are extra days off (a date listed there is never a working day), ``workdays`` extra
    working days such as a make-up weekend the package does not know yet (a date listed there always is
    one). A date in both is a contradiction: ``ValueError``, to be reported as a config error.
    """

    def __init__(self, holidays: Iterable[date] = (), workdays: Iterable[date] = ()) -> None:
        self._holidays = frozenset(_day(d) for d in holidays)
        self._workdays = frozenset(_day(d) for d in workdays)
        both = sorted(self._holidays & self._workdays)
        if both:
            listed = ", ".join(d.isoformat() for d in both)
            raise ValueError(f"listed both as a holiday and as a working day: {listed}")

    def covers(self, day: date) -> bool:
        """True when the State Council schedule for ``day``'s year is known; otherwise ``is_working_day``
        falls back to Monday-Friday (plus the config overrides) for that year."""
        return _state_council(_day(day)) is not None

    def covered_until(self, today: date) -> date | None:
        """The last day of the last year the published schedule covers, from ``today``'s year on; None
        when it does not even cover ``today``."""
        if not self.covers(today):
            return None
        year = today.year
        while self.covers(date(year + 1, 1, 1)):
            year += 1
        return date(year, 12, 31)

    def listed_for(self, year: int) -> bool:
        """Whether the config's overrides list any day of ``year`` (the operator has filled it in)."""
        return any(d.year == year for d in self._holidays | self._workdays)

    def coverage(self, today: date) -> str:
        """For ``config-check``: how far the schedule reaches, and what to do before it runs out."""
        until = self.covered_until(today)
        reach = f"the State Council schedule is known through {until}" if until else (
            f"the State Council schedule of {today.year} is not known"
        )
        year = until.year + 1 if until else today.year
        if self.listed_for(year):
            return f"{reach}; the config lists holidays/workdays of {year}"
        return (
            f"{reach}; for {year} on, list the published holidays and make-up working days under "
            "`holidays` and `workdays` in the config (or upgrade chinesecalendar): until then Monday-Friday "
            "count as working days"
        )

    def is_working_day(self, day: date) -> bool:
        """A working day (工作日): config overrides first, then the schedule with its make-up days, and
        Monday-Friday for a year the schedule does not cover."""
        day = _day(day)
        if day in self._holidays:
            return False
        if day in self._workdays:
            return True
        known = _state_council(day)
        return day.weekday() < _SATURDAY if known is None else known

    def is_trading_day(self, day: date) -> bool:
        """A trading day (交易日): a working day that is Monday to Friday (a make-up Saturday is not)."""
        day = _day(day)
        return day.weekday() < _SATURDAY and self.is_working_day(day)

    def working_days(self, year: int, month: int) -> list[date]:
        """Every working day of the month, in order."""
        first = date(year, month, 1)
        days: list[date] = []
        day = first
        while day.month == first.month:
            if self.is_working_day(day):
                days.append(day)
            day += timedelta(days=1)
        return days

    def nth_working_day(self, year: int, month: int, n: int) -> date:
        """The ``n``-th working day (1-based) of the month; ``ValueError`` when the month has fewer."""
        if n < 1:
            raise ValueError(f"working days are counted from 1 (got {n})")
        days = self.working_days(year, month)
        if n > len(days):
            raise ValueError(f"{year}-{month:02d} has only {len(days)} working days (asked for the {n}th)")
        return days[n - 1]


def window_hold(
    now: datetime, *, production: bool, windows_enabled: bool, daily: bool, calendar: Calendar
) -> datetime | None:
    """When forwarding may happen, if it must wait for the midday window to close; None to go now.

    Holds only a daily table's file on a production station with ``windows`` enabled, while ``now`` is
    within [11:30, 15:00) Beijing time of a trading day; the answer is 15:00 that day, Asia/Shanghai-aware.
    Evaluate it again when the hold ends or after a restart: a file still held at the next trading
    day's window (the daemon was down in between) is held again until that day's 15:00.
    """
    local = _local(now)
    if not (production and windows_enabled and daily):
        return None
    if not calendar.is_trading_day(local.date()):
        return None
    if WINDOW_START <= local.time() < WINDOW_END:
        return datetime.combine(local.date(), WINDOW_END, tzinfo=PLATFORM_ZONE)
    return None


def monthly_deadline(
    data_date: date, calendar: Calendar, nth: int = MONTHLY_DUE_WORKING_DAY, at: time = MONTHLY_DUE_TIME
) -> datetime:
    """11:30 Beijing time on the 7th working day of the month after ``data_date``'s month (by default).

    A table's own rule may ask for more working days than a short month has (February has 16 to 18):
    the deadline is then that month's last working day, never an error on a file already accepted."""
    data_date = _day(data_date)
    year, month = (data_date.year + 1, 1) if data_date.month == 12 else (data_date.year, data_date.month + 1)
    days = calendar.working_days(year, month)
    due = days[min(nth, len(days)) - 1]
    return datetime.combine(due, at, tzinfo=PLATFORM_ZONE)


DAILY_DUE_TRADING_DAYS = 2
"""Daily tables are due T+1 trading day, which the platform now extends to two (spec 8) ..."""


def nth_trading_day_after(day: date, n: int, calendar: Calendar) -> date:
    """The ``n``-th trading day after ``day`` (``day`` itself not counted; n >= 1)."""
    if n < 1:
        raise ValueError(f"trading days after a date are counted from 1 (got {n})")
    day = _day(day)
    while n:
        day += timedelta(days=1)
        n -= calendar.is_trading_day(day)
    return day


def daily_deadline(
    data_date: date, calendar: Calendar, days: int = DAILY_DUE_TRADING_DAYS, at: time | None = None
) -> datetime:
    """A daily table's deadline: ``at`` (None: the end, i.e. the next midnight) of the ``days``-th trading
    day after ``data_date``, Beijing time."""
    due = nth_trading_day_after(data_date, days, calendar)
    if at is None:
        return datetime.combine(due + timedelta(days=1), time(0), tzinfo=PLATFORM_ZONE)
    return datetime.combine(due, at, tzinfo=PLATFORM_ZONE)


def is_late(now: datetime, data_date: date, calendar: Calendar) -> datetime | None:
    """The deadline (for the LATE finding's ``{deadline}``) when a monthly table's file received at
    ``now`` is later than it; None when on time. 11:30:00 itself is still on time ("by 11:30")."""
    deadline = monthly_deadline(data_date, calendar)
    return deadline if _local(now) > deadline else None


def stamp(moment: datetime) -> str:
    """A moment as receipts and history show ``{until}`` / ``{deadline}``: ``YYYY-MM-DD HH:MM``, Beijing."""
    return _local(moment).strftime("%Y-%m-%d %H:%M")


def _local(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a moment must carry its time zone (got naive {moment.isoformat()})")
    return moment.astimezone(PLATFORM_ZONE)


def _day(value: date) -> date:
    if isinstance(value, datetime):  # a datetime is a date too, and would silently miss every override
        raise TypeError(f"expected a date, got the datetime {value.isoformat()}")
    return value


def deadline_of(table: TableSpec, data_date: date, calendar: Calendar) -> datetime:
    """When a report of ``table`` for ``data_date`` is due (Beijing time); later is LATE."""
    rule = table.deadline
    if table.frequency is Frequency.DAILY:
        days = rule.days if rule else DAILY_DUE_TRADING_DAYS
        return daily_deadline(data_date, calendar, days, rule.at if rule else None)
    nth = rule.days if rule else MONTHLY_DUE_WORKING_DAY
    at = rule.at if rule and rule.at else MONTHLY_DUE_TIME
    return monthly_deadline(data_date, calendar, nth, at)

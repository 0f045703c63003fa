"""Reporting windows (spec 8) on real dates: National Day 2024, Spring Festival 2025, their make-up days.

Every expectation below is the State Council schedule as published, checked against chinesecalendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import chinese_calendar  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.windows import (
    PLATFORM_ZONE,
    Calendar,
    is_late,
    monthly_deadline,
    stamp,
    window_hold,
)

CAL = Calendar()
BJ = PLATFORM_ZONE
FAR_FUTURE = 2099  # no release of the package will know this year's schedule
FAR_PAST = 1990  # nor this one


def at(day: date, hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, us, tzinfo=BJ)


def hold(
    now: datetime,
    calendar: Calendar = CAL,
    *,
    production: bool = True,
    windows_enabled: bool = True,
    daily: bool = True,
) -> datetime | None:
    return window_hold(
        now, production=production, windows_enabled=windows_enabled, daily=daily, calendar=calendar
    )


NATIONAL_DAY_2024 = [date(2024, 10, d) for d in range(1, 8)]
SPRING_FESTIVAL_2025 = [date(2025, 1, 28) + timedelta(days=i) for i in range(8)]  # 01-28 .. 02-04
MAKE_UP_DAYS = [date(2024, 9, 29), date(2024, 10, 12), date(2025, 1, 26), date(2025, 2, 8)]
TUESDAY_AFTER_NATIONAL_DAY = date(2024, 10, 8)


# --- working and trading days ------------------------------------------------------------------------


@pytest.mark.parametrize("day", NATIONAL_DAY_2024 + SPRING_FESTIVAL_2025, ids=str)
def test_public_holidays_are_neither_working_nor_trading_days(day: date) -> None:
    assert CAL.covers(day)
    assert not CAL.is_working_day(day)
    assert not CAL.is_trading_day(day)


@pytest.mark.parametrize("day", MAKE_UP_DAYS, ids=str)
def test_make_up_weekend_days_are_working_but_not_trading_days(day: date) -> None:
    assert day.weekday() >= 5  # Saturday or Sunday
    assert CAL.is_working_day(day)
    assert not CAL.is_trading_day(day)


@pytest.mark.parametrize(
    "day",
    [date(2024, 9, 30), TUESDAY_AFTER_NATIONAL_DAY, date(2025, 1, 27), date(2025, 2, 5)],
    ids=str,
)
def test_weekdays_around_the_holidays_are_trading_days(day: date) -> None:
    assert CAL.is_working_day(day)
    assert CAL.is_trading_day(day)


@pytest.mark.parametrize("day", [date(2024, 10, 19), date(2024, 10, 20), date(2025, 2, 9)], ids=str)
def test_ordinary_weekends_are_days_off(day: date) -> None:
    assert not CAL.is_working_day(day)
    assert not CAL.is_trading_day(day)


def test_config_holiday_takes_a_day_off() -> None:
    wednesday = date(2024, 10, 16)
    assert CAL.is_trading_day(wednesday)
    cal = Calendar(holidays=[wednesday])
    assert not cal.is_working_day(wednesday)
    assert not cal.is_trading_day(wednesday)


def test_config_workday_on_a_weekend_is_working_but_not_trading() -> None:
    saturday = date(2024, 10, 19)
    cal = Calendar(workdays=[saturday])
    assert cal.is_working_day(saturday)
    assert not cal.is_trading_day(saturday)


def test_config_workday_overrides_a_public_holiday() -> None:
    wednesday = date(2024, 10, 2)  # National Day
    cal = Calendar(workdays=[wednesday])
    assert cal.is_working_day(wednesday)
    assert cal.is_trading_day(wednesday)


def test_config_holiday_overrides_a_make_up_day() -> None:
    cal = Calendar(holidays=[date(2024, 10, 12)])
    assert not cal.is_working_day(date(2024, 10, 12))


def test_a_day_both_holiday_and_workday_is_refused() -> None:
    with pytest.raises(ValueError, match="2024-10-16"):
        Calendar(holidays=[date(2024, 10, 16)], workdays=[date(2024, 10, 16), date(2024, 10, 19)])


def test_a_datetime_is_not_taken_for_a_date() -> None:
    with pytest.raises(TypeError):
        CAL.is_working_day(datetime(2024, 10, 8, 12, tzinfo=BJ))
    with pytest.raises(TypeError):
        Calendar(holidays=[datetime(2024, 10, 8, tzinfo=BJ)])


# --- the n-th working day ----------------------------------------------------------------------------


def test_working_days_of_october_2024_count_the_make_up_saturday() -> None:
    first_seven = CAL.working_days(2024, 10)[:7]
    assert first_seven == [date(2024, 10, d) for d in (8, 9, 10, 11, 12, 14, 15)]
    assert CAL.nth_working_day(2024, 10, 1) == TUESDAY_AFTER_NATIONAL_DAY
    assert CAL.nth_working_day(2024, 10, 5) == date(2024, 10, 12)  # the make-up Saturday
    assert CAL.nth_working_day(2024, 10, 7) == date(2024, 10, 15)


def test_seventh_working_day_after_spring_festival_2025() -> None:
    # 02-05, 02-06, 02-07, 02-08 (make-up Saturday), 02-10, 02-11, 02-12
    assert CAL.nth_working_day(2025, 2, 7) == date(2025, 2, 12)
    # January: 01-01 is New Year's Day; the make-up Sunday 01-26 is the 17th working day
    assert CAL.nth_working_day(2025, 1, 7) == date(2025, 1, 10)
    assert date(2025, 1, 26) in CAL.working_days(2025, 1)


def test_nth_working_day_agrees_with_the_package_for_every_month_it_covers() -> None:
    for year in (2024, 2025):
        for month in range(1, 13):
            expected = [
                d
                for d in (date(year, month, 1) + timedelta(days=i) for i in range(31))
                if d.month == month and chinese_calendar.is_workday(d)
            ]
            assert CAL.working_days(year, month) == expected


def test_nth_working_day_out_of_range() -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        CAL.nth_working_day(2024, 10, 0)
    with pytest.raises(ValueError, match="only 19 working days"):
        CAL.nth_working_day(2024, 10, 40)


def test_config_holiday_moves_the_nth_working_day() -> None:
    cal = Calendar(holidays=[date(2024, 10, 14)])
    assert cal.nth_working_day(2024, 10, 7) == date(2024, 10, 16)


# --- years the package does not cover ----------------------------------------------------------------


@pytest.mark.parametrize("year", [FAR_PAST, FAR_FUTURE])
def test_a_year_outside_the_schedule_falls_back_to_monday_to_friday(year: int) -> None:
    day = date(year, 10, 1)
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(day)  # what the package does on its own
    assert not CAL.covers(day)
    days = [day + timedelta(days=i) for i in range(14)]
    assert [CAL.is_working_day(d) for d in days] == [d.weekday() < 5 for d in days]
    assert [CAL.is_trading_day(d) for d in days] == [d.weekday() < 5 for d in days]


def test_an_uncovered_year_still_honours_config_overrides() -> None:
    national_day = date(FAR_FUTURE, 10, 1)  # a Thursday: a working day by the fallback
    make_up = date(FAR_FUTURE, 10, 10)  # a Saturday
    cal = Calendar(holidays=[national_day], workdays=[make_up])
    assert CAL.is_working_day(national_day)
    assert not cal.is_working_day(national_day)
    assert cal.is_working_day(make_up)
    assert not cal.is_trading_day(make_up)
    assert cal.nth_working_day(FAR_FUTURE, 10, 1) == date(FAR_FUTURE, 10, 2)


def test_an_uncovered_year_gives_a_weekday_deadline() -> None:
    # October 2099 starts on a Thursday: 1, 2, 5, 6, 7, 8, 9
    assert monthly_deadline(date(FAR_FUTURE, 9, 30), CAL) == datetime(FAR_FUTURE, 10, 9, 11, 30, tzinfo=BJ)


# --- the midday hold of daily tables -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hh", "mm", "ss", "us", "held"),
    [
        (9, 0, 0, 0, False),
        (11, 29, 59, 999_999, False),
        (11, 30, 0, 0, True),
        (12, 0, 0, 0, True),
        (14, 59, 59, 0, True),
        (14, 59, 59, 999_999, True),
        (15, 0, 0, 0, False),
        (15, 0, 0, 1, False),
        (23, 59, 0, 0, False),
    ],
)
def test_hold_boundaries_on_a_trading_day(hh: int, mm: int, ss: int, us: int, held: bool) -> None:
    until = hold(at(TUESDAY_AFTER_NATIONAL_DAY, hh, mm, ss, us))
    if held:
        assert until == at(TUESDAY_AFTER_NATIONAL_DAY, 15)
        assert until is not None and until.tzinfo == BJ
    else:
        assert until is None


@pytest.mark.parametrize("day", [date(2024, 10, 1), date(2024, 10, 2), date(2025, 1, 31)], ids=str)
def test_no_hold_on_a_holiday(day: date) -> None:
    assert hold(at(day, 12)) is None


@pytest.mark.parametrize("day", MAKE_UP_DAYS, ids=str)
def test_no_hold_on_a_make_up_weekend_day(day: date) -> None:
    assert hold(at(day, 12)) is None  # a working day, but the exchanges are closed


@pytest.mark.parametrize("day", [date(2024, 10, 19), date(2024, 10, 20)], ids=str)
def test_no_hold_on_a_weekend(day: date) -> None:
    assert hold(at(day, 12)) is None


@pytest.mark.parametrize(
    "flags",
    [(False, True, True), (True, False, True), (True, True, False)],
    ids=["test-station", "windows-off", "monthly-table"],
)
def test_only_production_daily_files_with_windows_on_are_held(flags: tuple[bool, bool, bool]) -> None:
    production, windows_enabled, daily = flags
    now = at(TUESDAY_AFTER_NATIONAL_DAY, 12)
    assert hold(now, production=production, windows_enabled=windows_enabled, daily=daily) is None
    assert hold(now) is not None


def test_hold_follows_config_overrides() -> None:
    assert hold(at(date(2024, 10, 16), 12), Calendar(holidays=[date(2024, 10, 16)])) is None
    national_day = date(2024, 10, 2)
    assert hold(at(national_day, 12), Calendar(workdays=[national_day])) == at(national_day, 15)


def test_hold_reads_any_zone_as_beijing_time() -> None:
    assert hold(datetime(2024, 10, 8, 3, 29, 59, tzinfo=UTC)) is None  # 11:29:59 in Beijing
    until = hold(datetime(2024, 10, 8, 4, 0, tzinfo=UTC))  # 12:00 in Beijing
    assert until == datetime(2024, 10, 8, 7, 0, tzinfo=UTC)
    assert until is not None and until.tzinfo == BJ and until.hour == 15
    # 2024-10-07 23:30 in New York's offset is 2024-10-08 11:30 in Beijing
    assert hold(datetime(2024, 10, 7, 23, 30, tzinfo=timezone(timedelta(hours=-4)))) == at(
        TUESDAY_AFTER_NATIONAL_DAY, 15
    )


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        hold(datetime(2024, 10, 8, 12))
    with pytest.raises(ValueError, match="time zone"):
        is_late(datetime(2024, 10, 16, 12), date(2024, 9, 30), CAL)


def test_a_restart_inside_the_window_keeps_the_same_release_time() -> None:
    """The hold is recomputed from the clock, not remembered: what a restart sees is what was promised."""
    held_at = hold(at(TUESDAY_AFTER_NATIONAL_DAY, 11, 45))
    after_restart = hold(at(TUESDAY_AFTER_NATIONAL_DAY, 14, 30))
    assert held_at == after_restart == at(TUESDAY_AFTER_NATIONAL_DAY, 15)
    assert hold(at(TUESDAY_AFTER_NATIONAL_DAY, 15, 0, 0, 1)) is None  # released after 15:00


def test_a_restart_at_the_next_window_holds_again_until_that_days_end() -> None:
    """Down from the hold until the next trading day's window: forwarding still waits for 15:00."""
    assert hold(at(date(2024, 10, 9), 13)) == at(date(2024, 10, 9), 15)
    assert hold(at(date(2024, 10, 9), 9)) is None  # restarted before the window: forwarded at once


@given(st.datetimes(min_value=datetime(2004, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(BJ)))
def test_hold_invariants(now: datetime) -> None:
    until = hold(now)
    if until is None:
        return
    assert CAL.is_trading_day(now.date())
    assert now < until <= now + timedelta(hours=3, minutes=30)
    assert until.date() == now.date() and until.hour == 15 and until.minute == 0
    assert hold(until) is None


# --- monthly deadlines -------------------------------------------------------------------------------


def test_monthly_deadline_is_the_seventh_working_day_of_the_next_month() -> None:
    deadline = at(date(2024, 10, 15), 11, 30)
    assert monthly_deadline(date(2024, 9, 30), CAL) == deadline
    assert monthly_deadline(date(2024, 9, 1), CAL) == deadline  # any date of the month
    assert monthly_deadline(date(2025, 1, 31), CAL) == at(date(2025, 2, 12), 11, 30)
    assert monthly_deadline(date(2024, 12, 31), CAL) == at(date(2025, 1, 10), 11, 30)  # year turn


@pytest.mark.parametrize(
    ("now", "late"),
    [
        (at(date(2024, 10, 8), 9), False),
        (at(date(2024, 10, 12), 16), False),  # the make-up Saturday is only the 5th working day
        (at(date(2024, 10, 15), 11, 29, 59), False),
        (at(date(2024, 10, 15), 11, 30), False),  # due *by* 11:30
        (at(date(2024, 10, 15), 11, 30, 0, 1), True),
        (at(date(2024, 10, 15), 11, 30, 1), True),
        (at(date(2024, 10, 16), 9), True),
        (at(date(2024, 11, 20), 9), True),
    ],
    ids=str,
)
def test_late_after_1130_on_the_seventh_working_day(now: datetime, late: bool) -> None:
    deadline = is_late(now, date(2024, 9, 30), CAL)
    assert deadline == (at(date(2024, 10, 15), 11, 30) if late else None)


def test_late_reads_any_zone_as_beijing_time() -> None:
    assert is_late(datetime(2024, 10, 15, 3, 30, tzinfo=UTC), date(2024, 9, 30), CAL) is None
    assert is_late(datetime(2024, 10, 15, 3, 30, 1, tzinfo=UTC), date(2024, 9, 30), CAL) is not None


def test_late_follows_config_overrides() -> None:
    cal = Calendar(holidays=[date(2024, 10, 14)])  # the 7th working day becomes 10-16
    assert is_late(at(date(2024, 10, 15), 12), date(2024, 9, 30), cal) is None
    assert is_late(at(date(2024, 10, 16), 12), date(2024, 9, 30), cal) == at(date(2024, 10, 16), 11, 30)


def test_stamp_is_beijing_minutes() -> None:
    assert stamp(at(TUESDAY_AFTER_NATIONAL_DAY, 15)) == "2024-10-08 15:00"
    assert stamp(datetime(2024, 10, 15, 3, 30, tzinfo=UTC)) == "2024-10-15 11:30"


def test_a_monthly_rule_longer_than_a_short_month_ends_on_its_last_working_day() -> None:
    """A table's own rule may ask for the 20th working day; February 2026 has 16: no error on a file
    already accepted, the deadline is the month's last working day."""
    calendar = Calendar()
    due = monthly_deadline(date(2026, 1, 15), calendar, nth=20)
    assert due.date() == calendar.working_days(2026, 2)[-1]
